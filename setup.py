"""The repository root is the package `retrax`; tests/ and benchmarks/ are not installed."""
from setuptools import setup
from setuptools.command.build_py import build_py

SUBPACKAGES = ("models", "models.backbones", "models.heads", "models.kinds", "train", "train.tasks", "eval", "index", "configs", "xla_cpu")


class BuildPyWithoutSetup(build_py):
  """The root is the package, so keep setup.py itself out of it."""

  def find_package_modules(self, package, package_dir):
    modules = super().find_package_modules(package, package_dir)
    return [m for m in modules if not (package == "retrax" and m[1] == "setup")]


setup(
    name="retrax",
    version="0.1.0",
    description="JAX/Flax neural information retrieval: encoders, losses, ScaNN evaluation.",
    python_requires=">=3.10",
    packages=["retrax"] + [f"retrax.{p}" for p in SUBPACKAGES],
    package_dir={"retrax": ".", **{f"retrax.{p}": p.replace(".", "/") for p in SUBPACKAGES}},
    package_data={"retrax.xla_cpu": ["attention.cc", "layer_norm.cc", "kernels.h", "block_cache.cc"]},
    cmdclass={"build_py": BuildPyWithoutSetup},
    install_requires=[
        "jax", "flax>=0.12", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
        "transformers", "tokenizers", "safetensors", "numpy", "scann", "ml-collections",
        "tqdm", "absl-py", "tensorboard", "etils[epath]", "gcsfs",
    ],
    extras_require={
        "test": ["torch==2.13.0", "sentence-transformers", "pytrec-eval-terrier", "pytest",
                 "faiss-cpu", "voyager", "gcp-storage-emulator"],
    },
)
