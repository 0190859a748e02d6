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
from mimjax import workdir_layout
from mimjax import workdir_lock
from tests import helpers

HOLD = ("import sys, time\n"
        "from mimjax import workdir_lock\n"
        "workdir_lock.WorkdirLock(sys.argv[1]).acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")


def test_second_trainer_on_a_live_workdir_refuses_with_its_host_and_pid(tmp_path):
  workdir = str(tmp_path)
  with workdir_lock.WorkdirLock(workdir) as held:
    result = helpers.run_cli(helpers.train_cmd("mae", workdir))
    assert os.path.exists(held.path)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith("mimjax-train: error:")]
  assert len(errors) == 1 and "Traceback" not in result.stderr
  assert f"host {socket.gethostname()}, pid {os.getpid()}" in errors[0]
  assert not os.path.exists(checkpoint.checkpoint_dir(workdir))
  assert not os.path.exists(os.path.join(workdir, workdir_layout.LOCK))  # released


def test_lock_of_a_killed_run_does_not_block_a_restart(tmp_path):
  workdir = str(tmp_path)
  proc = subprocess.Popen([sys.executable, "-c", HOLD, workdir], env=helpers.cli_env(),
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"pid {proc.pid},"):
      workdir_lock.WorkdirLock(workdir).acquire()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  left = json.loads((tmp_path / workdir_layout.LOCK).read_text())
  assert left["pid"] == proc.pid  # the killed run left its lock behind
  lock = workdir_lock.WorkdirLock(workdir).acquire()
  assert json.loads((tmp_path / workdir_layout.LOCK).read_text())["pid"] == os.getpid()
  lock.release()


@pytest.mark.parametrize("age,busy", [(60.0, True), (2 * workdir_lock.STALE_SECONDS, False)])
def test_lock_of_another_host_counts_while_its_heartbeat_is_fresh(age, busy, tmp_path):
  now = time.time()
  (tmp_path / workdir_layout.LOCK).write_text(json.dumps(
      dict(host="other-host.example", pid=1, started=now - age, heartbeat=now - age, token="x")))
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  if busy:
    with pytest.raises(workdir_lock.WorkdirBusyError, match="host other-host.example, pid 1,"):
      lock.acquire()
  else:
    lock.acquire().release()


def test_a_requeued_job_takes_over_the_fresh_lock_of_its_earlier_attempt(tmp_path, monkeypatch,
                                                                         capsys):
  """What a SLURM job killed on one node leaves for its requeued attempt on another."""
  now = time.time()
  (tmp_path / workdir_layout.LOCK).write_text(json.dumps(
      dict(host="node-17.example", pid=4242, started=now - 30, heartbeat=now - 30, token="x",
           run_id="81234")))
  monkeypatch.delenv(workdir_lock.RUN_ID_ENV, raising=False)
  monkeypatch.setenv("SLURM_JOB_ID", "81235")  # another job: the lock is live
  with pytest.raises(workdir_lock.WorkdirBusyError, match="host node-17.example, pid 4242,"):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  monkeypatch.setenv("SLURM_JOB_ID", "81234")  # the same job, requeued
  lock = workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  on_disk = json.loads(lock.path.read_text())
  lock.release()
  assert (on_disk["host"], on_disk["pid"], on_disk["run_id"]) == (socket.gethostname(),
                                                                   os.getpid(), "81234")
  assert "Taking over the lock of an earlier attempt of this run (81234: host node-17" in (
      capsys.readouterr().out)


def test_a_live_run_of_the_same_job_on_this_host_keeps_its_lock(tmp_path, monkeypatch):
  """Two job steps of one SLURM allocation share the job id: a live one is not taken over."""
  monkeypatch.setenv("SLURM_JOB_ID", "81234")
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=helpers.cli_env(),
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "locked"
    assert json.loads((tmp_path / workdir_layout.LOCK).read_text())["run_id"] == "81234"
    with pytest.raises(workdir_lock.WorkdirBusyError, match=f"pid {proc.pid},"):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


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
