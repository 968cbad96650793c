"""gcp-storage-emulator (PyPI), run as a process for the tests, with the one header of Cloud
Storage that it omits: GCS answers every object download with `x-goog-generation` (the object's
generation), which tensorstore (orbax's arrays) reads to make its conditional writes, and without
which it stops with "Malformed StorageGeneration". Here the emulator's download handler adds it.

  python tests/gcs_emulator.py PORT BUCKET
"""
import sys
from http import HTTPStatus

from gcp_storage_emulator import __main__ as emulator
from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  if response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    response["x-goog-generation"] = obj["generation"]
    response["x-goog-metageneration"] = obj["metageneration"]


objects.download = _download_with_generation  # objects.get (…?alt=media) calls it by this name

if __name__ == "__main__":
  port, bucket = sys.argv[1:]
  emulator.main(["start", "--host=127.0.0.1", f"--port={port}", "--in-memory", f"--default-bucket={bucket}", "-q"])
