"""A full disk during a save, on a real size-limited file system (a tmpfs in a private mount
namespace: `unshare -m` as root, `unshare -rm` as a user where user namespaces are allowed)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import helpers

SIZE = "1200k"  # one checkpoint of the tiny model (~0.75 MB on tmpfs) fits, two do not


def _namespace_prefix():
  if not shutil.which("unshare"):
    return None
  prefix = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]
  probe = subprocess.run(prefix + ["sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>&1 || "
                                   "mount -t tmpfs -o size=1m tmpfs /tmp 2>&1"],
                         capture_output=True, text=True)
  return prefix if probe.returncode == 0 else None


def test_save_on_a_full_disk_stops_at_the_next_step_in_one_line_and_the_restart_resumes(tmp_path):
  prefix = _namespace_prefix()
  if prefix is None:
    pytest.skip("this machine allows no private tmpfs mount (unshare -m / -rm); "
                "the full-disk test needs a size-limited file system")
  mount = str(tmp_path / "small_fs")
  os.makedirs(mount)
  script = (f'mount -t tmpfs -o size={SIZE} tmpfs "$1" && '
            f'exec "{sys.executable}" -m tests.full_disk_scenario "$1"')
  result = subprocess.run(prefix + ["sh", "-c", script, "sh", mount], env=helpers.cli_env(),
                          cwd=helpers.ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  line = next(l for l in result.stdout.splitlines() if l.startswith("RESULT "))
  got = json.loads(line[len("RESULT "):])
  stderr = got["stderr"]
  assert got["returncode"] == 2, f"the save did not fail: the file system was not full\n{stderr}"
  assert "Traceback" not in stderr, stderr
  errors = [l for l in stderr.splitlines() if l.startswith("mimjax-train: error:")]
  assert len(errors) == 1, stderr
  assert "no space left on the device while saving checkpoint step 4" in errors[0]
  assert "step 2, is intact" in errors[0]
  assert max(got["steps_run"]) <= 4 + 2  # the next step noticed, not the next save
  assert got["steps_after_failure"] == [2] and got["intact_step"] == 2
  assert "Resuming from" in got["restart_stdout"] and "at step 2" in got["restart_stdout"]
  assert got["steps_after_restart"] == [4, 6, 8]
  assert sorted(int(s) for s in got["losses"]) == list(range(1, 9))
