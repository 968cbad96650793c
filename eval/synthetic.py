"""A LIMIT-style collection (Weller et al. 2025), generated: people, the things they like, "Who likes X?".

Every attribute is liked by exactly two people, a distinct pair per attribute, so each query
has k=2 relevant documents and the queries cover most pairs of people; with the defaults each
person likes about 43 attributes, as in LIMIT-small. Attributes are modifier-noun pairs
("Velvet Harps"), so their words recur across documents. The text is generated here, not copied.
"""
import itertools
import json
import random

from ..files import as_path, atomic_directory

FIRST_NAMES = (
    "Abel", "Bianca", "Cyrus", "Delphine", "Emeric", "Fiona", "Gideon", "Hollis", "Imogen", "Jasper",
    "Kerensa", "Lionel", "Marisol", "Nikolai", "Odette", "Percival", "Quilla", "Rosalind", "Silas",
    "Tamsin", "Ulric", "Verity", "Wendell", "Ximena", "Yusuf", "Zinnia",
)
LAST_NAMES = (
    "Abernethy", "Blackwood", "Castellanos", "Dunmore", "Eastwick", "Fairweather", "Galloway",
    "Hartigan", "Ingleby", "Jessop", "Kettering", "Lindqvist", "Marchetti", "Northcott", "Okonkwo",
    "Pemberton", "Quigley", "Ravenscroft", "Sorensen", "Thackeray", "Underhill", "Valdivia",
    "Whitlock", "Yardley", "Zabriskie",
)
MODIFIERS = (
    "Antique", "Arctic", "Baroque", "Bavarian", "Coastal", "Copper", "Desert", "Electric", "Emerald",
    "Floating", "Folk", "Gothic", "Handmade", "Hawaiian", "Icelandic", "Jade", "Lunar", "Medieval",
    "Midnight", "Miniature", "Moroccan", "Neon", "Nordic", "Origami", "Persian", "Prairie",
    "Retro", "Rustic", "Silk", "Solar", "Tibetan", "Tropical", "Velvet", "Victorian", "Volcanic",
    "Wooden",
)
NOUNS = (
    "Accordions", "Aquariums", "Bonsai Trees", "Canoes", "Carousels", "Chess Sets", "Clocks",
    "Compasses", "Fountains", "Gardens", "Gliders", "Harps", "Hammocks", "Kites", "Lanterns",
    "Lighthouses", "Maps", "Marionettes", "Mosaics", "Observatories", "Orchids", "Pottery",
    "Puzzles", "Quilts", "Radios", "Sailboats", "Sculptures", "Snow Globes", "Tapestries",
    "Teapots", "Telescopes", "Trains", "Typewriters", "Violins",
)


def _vocabulary() -> list[str]:
  return [f"{m} {n}" for m in MODIFIERS for n in NOUNS]


def _names(rng: random.Random, count: int) -> list[str]:
  combos = [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]
  return rng.sample(combos, count)


def _pairs(rng: random.Random, num_people: int, count: int) -> list[tuple[int, int]]:
  """`count` distinct pairs of people that together cover everyone, in random order."""
  people = list(range(num_people))
  rng.shuffle(people)
  cover = [tuple(sorted(people[i:i + 2])) for i in range(0, num_people - 1, 2)]
  if num_people % 2:
    cover.append(tuple(sorted((people[-1], people[0]))))
  taken = set(cover)
  rest = [p for p in itertools.combinations(range(num_people), 2) if p not in taken]
  pairs = cover + rng.sample(rest, count - len(cover))
  rng.shuffle(pairs)
  return pairs


def _sentence(name: str, likes: list[str]) -> str:
  """'<Name> likes a, b and c.'"""
  listed = likes[0] if len(likes) == 1 else ", ".join(likes[:-1]) + " and " + likes[-1]
  return f"{name} likes {listed}."


def _check(num_people: int, num_attributes: int) -> None:
  """Everyone likes something, pairs are distinct, names and attributes are distinct."""
  people = len(FIRST_NAMES) * len(LAST_NAMES)
  most = min(num_people * (num_people - 1) // 2, len(_vocabulary()))
  if not 2 <= num_people <= people or not (num_people + 1) // 2 <= num_attributes <= most:
    raise ValueError(f"expected 2 <= num_people <= {people} and {(num_people + 1) // 2} <= num_attributes <= "
                     f"{most}, got {num_people} and {num_attributes}")


def _jsonl(rows) -> str:
  return "".join(json.dumps(row) + "\n" for row in rows)


def write_limit_style(folder, num_people: int = 46, num_attributes: int = 1000, seed: int = 0,
                      train_fraction: float = 0.0) -> None:
  """Writes corpus.jsonl, queries.jsonl and qrels/test.tsv into `folder`, which must not exist.

  One document per person ("<Name> likes <a>, ... and <z>."), one query per attribute
  ("Who likes <x>?") with grade 1 for the two people who like it. With train_fraction > 0,
  that share of the queries goes to qrels/train.tsv instead. Deterministic in `seed`;
  written through files.atomic_directory, so an interrupted write leaves no `folder`, and of two
  processes writing the same collection the first one's is kept.
  """
  _check(num_people, num_attributes)
  folder = as_path(folder)
  if folder.exists():
    raise FileExistsError(f"{folder} exists")
  rng = random.Random(seed)
  names = _names(rng, num_people)
  attributes = rng.sample(_vocabulary(), num_attributes)
  pairs = _pairs(rng, num_people, num_attributes)
  likes = [[] for _ in range(num_people)]
  for attribute, pair in zip(attributes, pairs):
    for person in pair:
      likes[person].append(attribute)
  for liked in likes:
    rng.shuffle(liked)
  with atomic_directory(folder, replace=False) as partial:
    (partial / "qrels").mkdir()
    (partial / "corpus.jsonl").write_text(_jsonl(
        {"_id": f"person_{i}", "title": "", "text": _sentence(names[i], likes[i])} for i in range(num_people)))
    (partial / "queries.jsonl").write_text(_jsonl(
        {"_id": f"query_{j}", "text": f"Who likes {a}?"} for j, a in enumerate(attributes)))
    num_train = round(train_fraction * num_attributes)
    for split, queries in (("train", range(num_train)), ("test", range(num_train, num_attributes))):
      if queries:
        (partial / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"query_{j}\tperson_{p}\t1\n" for j in queries for p in pairs[j]))
