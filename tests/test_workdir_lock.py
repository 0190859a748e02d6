"""One run per workdir, with real second processes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from mimjax import checkpoint
from mimjax import workdir_lock
from tests import trainer_utils as tu

HOLD = ("import sys, time\n"
        "from mimjax import workdir_lock\n"
        "workdir_lock.WorkdirLock(sys.argv[1]).acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")


def test_second_trainer_on_a_live_workdir_refuses_with_its_host_and_pid(tmp_path):
  workdir = str(tmp_path)
  with workdir_lock.WorkdirLock(workdir) as held:
    result = tu.run_cli(tu.train_cmd("mae", workdir))
    assert os.path.exists(held.path)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith("mimjax-train: error:")]
  assert len(errors) == 1 and "Traceback" not in result.stderr
  assert f"host {socket.gethostname()}, pid {os.getpid()}" in errors[0]
  assert not os.path.exists(checkpoint.checkpoint_dir(workdir))
  assert not os.path.exists(os.path.join(workdir, workdir_lock.LOCK_FILE))  # released


def test_lock_of_a_killed_run_does_not_block_a_restart(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen([sys.executable, "-c", HOLD, workdir], env=tu.cli_env(),
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"pid {proc.pid},"):
      workdir_lock.WorkdirLock(workdir).acquire()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  left = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
  assert left["pid"] == proc.pid  # the killed run left its lock behind
  lock = workdir_lock.WorkdirLock(workdir).acquire()
  assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()
  lock.release()


@pytest.mark.parametrize("age,busy", [(60.0, True), (2 * workdir_lock.STALE_SECONDS, False)])
def test_lock_of_another_host_counts_while_its_heartbeat_is_fresh(age, busy, tmp_path):
  now = time.time()
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps(
      dict(host="other-host.example", pid=1, started=now - age, heartbeat=now - age, token="x")))
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  if busy:
    with pytest.raises(workdir_lock.WorkdirBusyError, match="host other-host.example, pid 1,"):
      lock.acquire()
  else:
    lock.acquire().release()


def test_heartbeat_advances_while_held(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path), heartbeat_seconds=0.05).acquire()
  first = lock.record["heartbeat"]
  time.sleep(0.5)
  on_disk = json.loads(lock.path.read_text())
  lock.release()
  assert on_disk["heartbeat"] > first
  assert not lock.path.exists()


def test_workdir_that_cannot_be_created_is_one_clear_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(workdir_lock.errors.UserError, match="--workdir: cannot create"):
    workdir_lock.WorkdirLock(str(blocker / "run")).acquire()
