"""A local Cloud Storage: `gcp-storage-emulator` on 127.0.0.1, stoppable and restartable.

With the environment of `env()`, gcsfs (and so etils.epath) and tensorstore (and so orbax) talk
to it instead of storage.googleapis.com. Objects live in a folder, so they survive a restart.
"""
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

BUCKET = "mimjax-test"


def _free_port() -> int:  # not tests.helpers': this file also runs as the server's script
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class Emulator:

  def __init__(self, data_dir: str, generation_header: bool = True):
    """`generation_header=False` serves downloads without `x-goog-generation`, as the emulator
    itself does: a store that breaks its own reads, on which every checkpoint save fails."""
    self.data_dir = data_dir
    self.generation_header = generation_header
    self.port = _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self._process = None

  def env(self) -> dict:
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x", "EPATH_USE_TF": "false"}

  def start(self):
    repair = [] if self.generation_header else [_NO_GENERATION_HEADER]
    self._process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *repair, "-d", self.data_dir, "start",
         "--host", "127.0.0.1", "--port", str(self.port), "--default-bucket", BUCKET, "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b/{BUCKET}", timeout=1)
        return
      except OSError:
        time.sleep(0.1)
    raise RuntimeError(f"the storage emulator did not answer on {self.url}")

  def stop(self):
    if self._process:
      self._process.terminate()
      self._process.wait(timeout=10)
      self._process = None


_NO_GENERATION_HEADER = "--no-generation-header"


def _serve(args):
  """Runs the emulator with two repairs, so that it can stand in for Cloud Storage here.

  - Downloads carry `x-goog-generation`, as Cloud Storage's do: tensorstore reads an object's
    generation from it (orbax's OCDBT manifest reads depend on it); the emulator leaves it out
    (and so does this one under --no-generation-header, as the first argument).
  - Files are written atomically: the emulator rewrites its index on every upload, and a stop in
    the middle of that write would leave an index it cannot start from again.
  """
  from gcp_storage_emulator import exceptions
  from gcp_storage_emulator import storage as storage_module
  from gcp_storage_emulator.handlers import objects

  original_write = storage_module._FileStore.write_bytes  # pylint: disable=protected-access

  def write_bytes(self, rel, content):
    if self._use_memory:  # pylint: disable=protected-access
      return original_write(self, rel, content)
    target = self._disk_path(rel)  # pylint: disable=protected-access
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, target)

  storage_module._FileStore.write_bytes = write_bytes  # pylint: disable=protected-access

  original = objects.download

  def download(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    except exceptions.NotFound:
      pass
    return original(request, response, storage, *args, **kwargs)

  if args[:1] == [_NO_GENERATION_HEADER]:
    args = args[1:]
  else:
    objects.download = download  # before the server module builds its routing table from it
  from gcp_storage_emulator import __main__ as cli
  cli.main(args)


if __name__ == "__main__":
  _serve(sys.argv[1:])
