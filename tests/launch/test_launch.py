"""The launchers end to end, with stand-in gcloud/sbatch/srun on PATH and the storage emulator.

The stand-ins (tests/launch/bin/) carry out what they are asked with local processes and the
environment the real ones give; the trainers they start are the real ones.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from mimjax import checkpoint
from mimjax import topology
from mimjax.launch import slurm
from mimjax.launch import tpu
from tests import helpers
from tests import gcs_emulator

BUCKET = f"gs://{gcs_emulator.BUCKET}"
STEPS = helpers.STEPS
needs_libtpu = pytest.mark.skipif(
    not topology.has_libtpu(),
    reason="SKIPPED: libtpu is not installed; pip install 'mimjax[tpu]' for the memory check")
L16 = ["--config", "configs/mae.py:variant=L/16,dataset=imagenet2012", "--workdir", "gs://b/r"]


@pytest.fixture
def cloud(tmp_path, monkeypatch):
  """The stand-ins first on PATH; their state (and log of calls) under tmp_path."""
  state = tmp_path / "cloud"
  state.mkdir()
  helpers.use_fake_cloud(monkeypatch, state)
  return state


def _env(devices: int = 1) -> dict:
  return dict(helpers.cli_env(devices), JAX_PLATFORMS="cpu")


def _run(args, timeout=120) -> subprocess.CompletedProcess:
  return subprocess.run(args, env=_env(), cwd=helpers.ROOT, capture_output=True, text=True,
                        timeout=timeout)


# ---------------------------------------------------------------------------------------------
# --dry_run: the documented command forms, nothing called.
# ---------------------------------------------------------------------------------------------
def test_tpu_dry_run_prints_the_gcloud_commands_and_calls_nothing(cloud):
  out = _run(helpers.launcher("tpu") + ["--name", "mae-l16", "--zone", "us-central1-a",
                                        "--accelerator_type", "v5litepod-16", "--spot",
                                        "--skip_compile_check", "--dry_run", "--", *L16])
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if not l.startswith("#")]
  # https://cloud.google.com/tpu/docs/managing-tpus-tpu-vm: create, scp, ssh --worker, delete.
  assert lines[0] == ("gcloud compute tpus tpu-vm create mae-l16 --accelerator-type=v5litepod-16 "
                      "--version=v2-alpha-tpuv5-lite --spot --zone=us-central1-a")
  assert lines[1].startswith("gcloud compute tpus tpu-vm scp code.tar.gz "
                             "'mae-l16:~/mimjax_code.tar.gz' --worker=all")
  assert lines[2].startswith("gcloud compute tpus tpu-vm ssh mae-l16 --worker=all '--command=")
  # The environment, unless a worker has it: uv from PyPI, a venv of Python 3.11, the tpu extra.
  env = re.search(r"if \[ -f (~/mimjax_envs/py3\.11-\w{12})/\.installed \]; then", lines[2])
  assert env, lines[2]
  for step in ("python3 -m pip install -q --target ~/mimjax_envs/uv uv",
               f"~/mimjax_envs/uv/bin/uv venv -q --python 3.11 {env[1]} && ",
               f"uv pip install -q --python {env[1]}/bin/python -e '\"'\"'.[tpu]'\"'\"' && "
               f"touch {env[1]}/.installed; fi'"):
    assert step in lines[2], (step, lines[2])
  assert f"environment {env[1]} (uv)" in out.stdout.splitlines()[0]
  runs = lines[3:7]  # v5litepod-16: 4 hosts of 4 chips, one trainer each
  for i, line in enumerate(runs):
    assert line.startswith(f"gcloud compute tpus tpu-vm ssh mae-l16 --worker={i} '--command=")
    assert f" {env[1]}/bin/python -m mimjax.main " in line  # the trainer runs from it
    assert "--distributed --num_processes=4 --process_id=%d" % i in line
    assert "configs/mae.py:variant=L/16,dataset=imagenet2012" in line and "gs://b/r" in line
    assert "MIMJAX_RUN_ID=tpu:us-central1-a/mae-l16:gs://b/r" in line  # the workdir lock's run
  assert lines[7] == "gcloud compute tpus tpu-vm delete mae-l16 --quiet --zone=us-central1-a"
  assert not (cloud / "calls.log").exists()  # no cloud call, offline

  queued = _run(helpers.launcher("tpu") + ["--name", "q", "--zone", "europe-west4-b",
                                           "--accelerator_type", "v6e-8", "--queued", "--keep",
                                           "--python", "/opt/py/bin/python", "--skip_compile_check",
                                           "--dry_run", "--", *L16])
  lines = [l for l in queued.stdout.splitlines() if not l.startswith("#")]
  # --python: the user's interpreter gets the extra and runs the trainer; no environment.
  assert lines[2].endswith("cd ~/mimjax && /opt/py/bin/python -m pip install -q "
                           "'\"'\"'.[tpu]'\"'\"'' --zone=europe-west4-b")
  assert "mimjax_envs" not in queued.stdout and " /opt/py/bin/python -m mimjax.main " in lines[3]
  # https://cloud.google.com/tpu/docs/queued-resources
  assert lines[0] == ("gcloud compute tpus queued-resources create q --node-id=q "
                      "--zone=europe-west4-b --accelerator-type=v6e-8 "
                      "--runtime-version=v2-alpha-tpuv6e")
  assert len([l for l in lines if "--process_id=" in l]) == 1  # v6e-8: one host
  assert "delete" not in lines[-1]  # --keep


def test_slurm_dry_run_prints_a_valid_sbatch_script(cloud, tmp_path):
  out = _run(helpers.launcher("slurm") + ["--nodes", "2", "--gpus_per_node", "8",
                                          "--partition", "gpu", "--time", "24:00:00",
                                          "--account", "vision", "--dry_run",
                                          "--", "--config", "configs/mae.py:variant=L/16",
                                          "--workdir", "/shared/runs/l16"])
  assert out.returncode == 0, out.stderr
  text = out.stdout.split("\n", 1)[1]
  # https://slurm.schedmd.com/sbatch.html and srun.html
  for directive in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--requeue",
                    "--signal=B:USR1@300", "--partition=gpu", "--time=24:00:00",
                    "--account=vision", "--output=/shared/runs/l16/launch/logs/%x-%j.out"):
    assert f"#SBATCH {directive}\n" in text
  assert re.search(r"^srun --kill-on-bad-exit=1 \S+python\S* -m mimjax.main --config "
                   r"configs/mae.py:variant=L/16 --workdir /shared/runs/l16 --distributed &$",
                   text, re.M)
  assert "scontrol requeue \"$SLURM_JOB_ID\"" in text and "trap requeue USR1" in text
  script = tmp_path / "job.sbatch"
  script.write_text(text)
  assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
  assert not (cloud / "slurm").exists() and not os.path.exists("/shared/runs/l16")


# ---------------------------------------------------------------------------------------------
# Bad input: one line, nothing started.
# ---------------------------------------------------------------------------------------------
def test_no_command_after_the_separator_is_one_line(cloud):
  for argv in (["--processes", "2"], ["--processes", "2", "--"]):
    out = _run(helpers.launcher("local") + argv)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("launch/local.py: error: ")
    assert "after `--`" in out.stderr


def _one_error_line(out, prog: str) -> str:
  """The single `prog: error:` line a launcher answered an expected error with."""
  assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
  assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"{prog}: error: "), out.stderr
  return out.stderr


@pytest.mark.parametrize("target, argv, message", [
    ("slurm", ["--nodes", "x", "--gpus_per_node", "8"], "argument --nodes: invalid int value: 'x'"),
    ("slurm", ["--gpus_per_node", "8"], "the following arguments are required: --nodes"),
    ("tpu", ["--name", "t", "--zone", "z", "--accelerator_type", "v4-8", "--spot=yes"],
     "argument --spot: ignored explicit argument 'yes'"),
    ("local", ["--processes", "2", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_a_launcher_flag_mistake_is_one_line(target, argv, message):
  out = _run(helpers.launcher(target) + argv + ["--", *L16])
  line = _one_error_line(out, f"launch/{target}.py")
  assert message in line and f"(see launch/{target}.py --help)" in line


def test_launchers_take_verbose_and_answer_help_without_the_separator():
  for target in ("local", "slurm", "tpu"):
    out = _run(helpers.launcher(target) + ["--help"])
    assert out.returncode == 0 and "--verbose" in out.stdout, out.stderr


def _bare_path_env(*tools) -> dict:
  """The environment with PATH holding only this Python's directory: no gcloud, sbatch, git."""
  bare = os.path.dirname(sys.executable)
  if any(shutil.which(tool, path=bare) for tool in tools):
    pytest.skip(f"{bare} holds one of {tools}")
  return dict(_env(), PATH=bare)


def test_a_missing_sbatch_or_gcloud_is_one_line_and_dry_run_needs_neither(tmp_path):
  env = _bare_path_env("sbatch", "gcloud")
  slurm = helpers.launcher("slurm") + ["--nodes", "1", "--gpus_per_node", "1", "--", "--config",
                                       "configs/mae.py:demo", "--workdir", str(tmp_path / "run")]
  tpu_cmd = helpers.launcher("tpu") + ["--name", "t", "--zone", "z", "--accelerator_type", "v4-8",
                                       "--skip_compile_check", "--", *L16]
  run = lambda argv: subprocess.run(argv, env=env, cwd=helpers.ROOT, capture_output=True, text=True,
                                    timeout=60)
  line = _one_error_line(run(slurm), "launch/slurm.py")
  assert "sbatch is not installed here (not on PATH): run this on a SLURM login node" in line
  line = _one_error_line(run(tpu_cmd), "launch/tpu.py")
  assert "gcloud is not installed here (not on PATH): install the Google Cloud SDK" in line
  assert not (tmp_path / "run").exists()
  for argv in (slurm, tpu_cmd):  # --dry_run only prints: offline, neither tool needed
    dry = run(argv[:2] + ["--dry_run"] + argv[2:])
    assert dry.returncode == 0 and "Traceback" not in dry.stderr, dry.stderr
  assert "#SBATCH --nodes=1" in run(slurm[:2] + ["--dry_run"] + slurm[2:]).stdout


def test_verbose_adds_the_traceback_of_a_launchers_expected_error(tmp_path):
  env = _bare_path_env("sbatch")
  base = helpers.launcher("slurm") + ["--nodes", "1", "--gpus_per_node", "1"]
  trainer = ["--", "--config", "configs/mae.py:demo", "--workdir", str(tmp_path / "run")]
  for argv in (base + ["--verbose"] + trainer, base + trainer + ["--verbose"]):
    out = subprocess.run(argv, env=env, cwd=helpers.ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "Traceback (most recent call last)" in out.stderr
    assert out.stderr.splitlines()[-1].startswith("launch/slurm.py: error: sbatch is not installed")


def _stand_in_python(path, answer: str) -> str:
  """An interpreter on the cluster as the SLURM launcher's check sees it: `answer` is its shell."""
  path.write_text(f"#!/bin/sh\n{answer}\n")
  path.chmod(0o755)
  return str(path)


def test_a_slurm_python_older_than_3_11_is_one_line_before_submitting(cloud, tmp_path):
  python = _stand_in_python(tmp_path / "python3.10", "echo 3.10.12")  # it reports 3.10
  out = _run(helpers.launcher("slurm") + ["--nodes", "1", "--gpus_per_node", "1",
                                          "--python", python,
                                          "--", "--config", "configs/mae.py:demo",
                                          "--workdir", str(tmp_path / "run")])
  line = _one_error_line(out, "launch/slurm.py")
  assert line.startswith(f"launch/slurm.py: error: --python {python} is Python 3.10.12, but "
                         "mimjax needs >= 3.11: give --python the Python (>= 3.11) of an "
                         "environment with mimjax's dependencies"), line
  assert not (cloud / "slurm").exists() and not (tmp_path / "run").exists()  # nothing submitted


@pytest.mark.parametrize("answer, message", [
    ("echo 3.11.7; echo \"ModuleNotFoundError: No module named 'jax'\" >&2; exit 1",
     r"--python \S+ \(Python 3.11.7\) cannot import the trainer \(ModuleNotFoundError: No "
     r"module named 'jax'\): give --python"),
    (None, r"--python \S+/missing cannot be run here \(No such file or directory\)"),
])
def test_a_slurm_python_that_cannot_run_the_trainer_is_refused(cloud, tmp_path, answer, message):
  python = _stand_in_python(tmp_path / "python", answer) if answer else str(tmp_path / "missing")
  with pytest.raises(tpu.common.LaunchError, match=message):
    slurm.launch(["--nodes", "1", "--gpus_per_node", "1", "--python", python, "--", "--config",
                  "configs/mae.py:demo", "--workdir", str(tmp_path / "run")])
  assert not (cloud / "slurm").exists()


def test_a_launcher_outside_a_git_checkout_is_one_line(tmp_path):
  """The launchers ship the code with git archive: a copy that is no checkout says so."""
  for part in ("launch", "mimjax"):
    shutil.copytree(os.path.join(helpers.ROOT, part), tmp_path / part,
                    ignore=shutil.ignore_patterns("__pycache__"))
  out = _run([sys.executable, str(tmp_path / "launch" / "local.py"), "--", "--config",
              "configs/mae.py:demo", "--workdir", str(tmp_path / "run")])
  line = _one_error_line(out, "launch/local.py")
  assert f"{tmp_path} is not a git checkout" in line and "run them from a git clone" in line
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("accelerator, trainer, message", [
    ("v9-16", ["--workdir", f"{BUCKET}/x"], "unknown --accelerator_type 'v9-16'"),
    ("v4-16", ["--workdir", "/tmp/run"], "is a local path, but the hosts of a TPU slice"),
    ("v4-16", ["--workdir", f"{BUCKET}/x", "--config.input.batch_size=12"],
     r"the config cannot run on v4-16 \(2 hosts x 4 chips\): config.input.batch_size: 12 is not "
     "divisible by the 8 devices"),
    ("v4-16", ["--workdir", "gs://no-such-bucket/x"], "bucket gs://no-such-bucket does not exist"),
])
def test_bad_tpu_launches_are_refused_before_anything_starts(cloud, gcs, accelerator, trainer,
                                                             message):
  argv = ["--name", "t", "--zone", "z", "--accelerator_type", accelerator, "--skip_compile_check",
          "--", f"--config={helpers.ROOT}/configs/mae.py:demo", *trainer]
  with pytest.raises(tpu.common.LaunchError, match=message):
    tpu.launch(argv)
  assert not (cloud / "calls.log").exists()


def test_a_workers_command_follows_even_a_trainer_that_ends_at_once(tmp_path):
  """The follower never starts before the log exists, however fast the trainer is."""
  target = tpu.TpuTarget(name="t", zone="z", accelerator_type="v4-8", python="echo")
  (tmp_path / "mimjax").mkdir()
  command = target.vm.run(0, ["--workdir", "gs://b/r"], "gs://b/r")
  for _ in range(20):
    out = subprocess.run(["bash", "-c", command], env=dict(os.environ, HOME=str(tmp_path)),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "-m mimjax.main --workdir gs://b/r --distributed" in out.stdout


# ---------------------------------------------------------------------------------------------
# End to end.
# ---------------------------------------------------------------------------------------------
def test_local_two_processes_train_like_one(cloud, tmp_path, reference):
  """jax.distributed over 127.0.0.1: each process reads its share; the losses do not change."""
  workdir = str(tmp_path / "local2")
  out = _run(helpers.launcher("local") + ["--processes", "2", "--",
                                          *helpers.cli_flags("mae", workdir, **STEPS)], timeout=300)
  assert out.returncode == 0, out.stdout + out.stderr
  assert "[0] step 12/12" in out.stdout and "[1] step" not in out.stdout  # worker 0's log only
  assert helpers.losses(workdir) == pytest.approx(helpers.losses(reference), rel=1e-4)
  assert checkpoint.Checkpointer(workdir, read_only=True).all_steps() == [8, 10, 12]  # keeps 3
  recorded = os.path.join(workdir, "launch")
  sha = subprocess.run(["git", "-C", helpers.ROOT, "rev-parse", "HEAD"], capture_output=True,
                       text=True).stdout.strip()
  assert open(os.path.join(recorded, "git_sha")).read().startswith(sha)
  assert any(f.startswith("uncommitted-") for f in os.listdir(recorded))


def _tpu_argv(name, workdir, *extra, compile_check=False):
  check = [] if compile_check else ["--skip_compile_check"]
  return helpers.launcher("tpu") + ["--name", name, "--zone", "us-central1-a", "--accelerator_type",
                                    "v4-16", *check, *extra, "--",
                                    *helpers.cli_flags("mae", workdir, **STEPS)]


def _preempt(cloud, name):
  """What Compute Engine does to a spot slice: mark it preempted, SIGTERM the processes."""
  slice_dir = cloud / "tpus" / name
  (slice_dir / "state").write_text("PREEMPTED\n")
  for worker in sorted(slice_dir.glob("worker*")):
    os.killpg(int((worker / "mimjax.pid").read_text()), signal.SIGTERM)


def _worker_calls(cloud, slice_name: str) -> list[str]:
  """What the stand-in workers' python3 and uv were asked, `workerI: COMMAND` per call."""
  log = cloud / "workers.log"
  lines = log.read_text().splitlines() if log.exists() else []
  return [l.split("/", 1)[1] for l in lines if l.startswith(f"{slice_name}/")]


def test_tpu_pod_preempted_is_recreated_and_resumes(cloud, gcs, reference):
  """The workers' python3 is 3.10, as on the TPU images: each VM gets an environment of Python
  3.11 (uv from PyPI), which runs the trainer. With the memory check (where libtpu is installed:
  make test says loudly when it is not): mimjax.compile for v4-16's topology runs, under
  JAX_PLATFORMS=cpu, before any gcloud call."""
  workdir = f"{BUCKET}/tpu_spot"
  checked = topology.has_libtpu()
  launch = helpers.start(_tpu_argv("spot", workdir, "--spot", compile_check=checked), env=_env())
  before = helpers.read_until(launch, "[0] step 3/12")
  if checked:
    check = before.index("launch: checking that the config fits in the memory of v4-16")
    assert before.index("mesh {'data': 8, 'fsdp': 1} on v4:2x2x2 (v4-16)") > check, before
    # The verdict carries the bill: v4-16 is 8 chips, the run 12 steps.
    verdict = re.search(r"^launch: fits: ([\d.]+) GiB of 32 GiB; 12 steps x (< )?[\d.]+ m?s = "
                        r"(< )?[\d.]+ h on 8 chips = (< )?[\d.]+ chip-hours at 40% MFU$",
                        before, re.M)
    assert verdict and float(verdict.group(1)) < 1, before
    assert before.index("launch: gcloud compute tpus tpu-vm create spot") > verdict.start()
  _preempt(cloud, "spot")
  rest = launch.communicate(timeout=400)[0]
  assert launch.returncode == 0, rest
  assert "was preempted: recreating it and resuming" in rest
  assert f"[0] Resuming from {workdir}/checkpoints at step" in rest
  assert helpers.losses(workdir) == pytest.approx(helpers.losses(reference), rel=1e-4)
  calls = (cloud / "calls.log").read_text()
  assert calls.count("tpu-vm create spot") == 2 and calls.count("tpu-vm delete spot") == 2
  # Each worker of each VM (the first, then the one recreated): uv, a venv, the extra; the
  # image's python3 never ran the trainer.
  worker_calls = _worker_calls(cloud, "spot")
  for worker in ("worker0", "worker1"):
    mine = [c.split(": ", 1)[1] for c in worker_calls if c.startswith(f"{worker}: ")]
    assert [c.split(" -q ")[0] for c in mine] == ["python3 -m pip install", "uv venv",
                                                  "uv pip install"] * 2, worker_calls
    assert all("--python 3.11 " in c for c in mine if c.startswith("uv venv"))
  assert not (cloud / "tpus" / "spot").exists()  # deleted at the end


def test_a_failing_worker_stops_the_others_and_its_code_is_returned(cloud, gcs, monkeypatch):
  monkeypatch.setenv("MIMJAX_TEST_FAIL", "worker1:3")
  start = time.monotonic()
  out = _run(_tpu_argv("crash", f"{BUCKET}/tpu_crash", "--keep"), timeout=300)
  assert out.returncode == 3, out.stdout + out.stderr
  assert "[1] RuntimeError: worker1 fails on purpose with exit code 3" in out.stdout
  assert "worker 1 exited with 3; stopped the others" in out.stderr
  worker0 = int((cloud / "tpus" / "crash" / "worker0" / "mimjax.pid").read_text())
  for _ in range(100):  # worker 0's trainer, which waited for worker 1, is stopped
    try:
      os.killpg(worker0, 0)
      time.sleep(0.1)
    except ProcessLookupError:
      break
  else:
    pytest.fail("worker 0's trainer is still running")
  assert time.monotonic() - start < 240
  # Launched again on the kept slice, whose VMs have the environment: no second install.
  again = _run(_tpu_argv("crash", f"{BUCKET}/tpu_crash", "--keep"), timeout=300)
  assert again.returncode == 3, again.stdout + again.stderr
  assert ((cloud / "calls.log").read_text().count("--worker=all --command=mkdir -p ~/mimjax")
          == 2)  # the code is unpacked each time
  assert sorted(c.split(" -q ")[0] for c in _worker_calls(cloud, "crash")) == (
      ["worker0: python3 -m pip install", "worker0: uv pip install", "worker0: uv venv",
       "worker1: python3 -m pip install", "worker1: uv pip install", "worker1: uv venv"])


def test_slurm_job_signalled_before_its_limit_requeues_and_resumes(cloud, gcs, reference,
                                                                   tmp_path):
  workdir = f"{BUCKET}/slurm"
  out = _run(helpers.launcher("slurm") + ["--nodes", "1", "--gpus_per_node", "2",
                                          "--launch_dir", str(tmp_path / "launch"), "--",
                                          *helpers.cli_flags("mae", workdir, **STEPS)])
  assert out.returncode == 0, out.stderr
  job = re.search(r"Submitted job (\d+)", out.stdout).group(1)
  log = re.search(r"log: +(\S+)", out.stdout).group(1)
  state = cloud / "slurm"
  deadline = time.monotonic() + 600
  while not (os.path.exists(log) and "step 3/12" in open(log).read()):
    assert time.monotonic() < deadline, open(log).read() if os.path.exists(log) else "no log"
    time.sleep(0.05)
  os.kill(int((state / f"{job}.pid").read_text()), signal.SIGUSR1)  # SLURM's --signal=B:USR1
  while not (state / f"{job}.rc").exists():
    assert time.monotonic() < deadline, open(log).read()
    time.sleep(0.5)
  text = open(log).read()
  assert (state / f"{job}.rc").read_text() == "0", text
  assert "requeueing job" in text and f"job {job} (restart 1)" in text
  assert "Resuming from" in text
  assert helpers.losses(workdir) == pytest.approx(helpers.losses(reference), rel=1e-4)
  assert (tmp_path / "launch" / "code" / "mimjax" / "train.py").is_file()  # the snapshot ran


def test_launching_a_live_run_again_attaches_to_it(cloud, gcs):
  workdir = f"{BUCKET}/tpu_attach"
  steps = dict(total_steps=60, ckpt_every_steps=20)  # long enough to be alive when relaunched
  argv = helpers.launcher("tpu") + ["--name", "attach", "--zone", "us-central1-a",
                                    "--accelerator_type", "v4-16", "--skip_compile_check", "--",
                                    *helpers.cli_flags("mae", workdir, **steps)]
  first = helpers.start(argv, env=_env())
  helpers.read_until(first, "[0] step 1/60")
  first.kill()  # the launcher dies (a closed laptop); the trainers on the slice run on
  first.wait()
  second = _run(argv, timeout=300)
  assert second.returncode == 0, second.stdout + second.stderr
  assert f"a run of {workdir} is alive on attach: attaching" in second.stdout
  assert "[0] MAE mu/4" in second.stdout and "[0] step 60/60" in second.stdout  # the whole log
  calls = (cloud / "calls.log").read_text()
  assert calls.count("tpu-vm create attach") == 1 and calls.count("--process_id=0") == 1
  assert sorted(helpers.losses(workdir)) == list(range(1, 61))  # one run, never restarted
  assert not (cloud / "tpus" / "attach").exists()


# ---------------------------------------------------------------------------------------------
# The memory check (mimjax.compile for the slice's topology) before the slice is created.
# ---------------------------------------------------------------------------------------------
@needs_libtpu
def test_a_config_that_does_not_fit_is_refused_before_any_gcloud_call(cloud, gcs):
  out = _run(helpers.launcher("tpu") + ["--name", "huge", "--zone", "us-central1-a",
                                        "--accelerator_type", "v4-8", "--", "--config",
                                        "configs/mae.py:variant=H/14,dataset=imagenet2012",
                                   # 4096 images per chip: too big before compiling
                                        "--config.input.batch_size=16384",
                                        "--workdir", f"{BUCKET}/huge"], timeout=600)
  assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
  assert out.stderr.count("\n") == 1, out.stderr
  assert re.fullmatch(r"launch/tpu.py: error: the config does not fit in the memory of v4-8 "
                      r"\(1 hosts x 4 chips\): at least [\d.]+ GiB > 32 GiB .*; try "
                      r"--config.mesh.fsdp=4 .*\n", out.stderr), out.stderr
  assert not (cloud / "calls.log").exists()


def test_the_memory_check_reads_the_compiles_json_report():
  """The verdict comes from the report mimjax.compile writes, whatever its console's last line."""
  def check(fits: bool, verdict: str) -> list[str]:
    script = ("import json, sys; path = sys.argv[-1].removeprefix('--report='); "
              f"json.dump(dict(fits={fits}, verdict={verdict!r}), open(path, 'w')); "
              f"print('the memory table'); print('a last line'); sys.exit({0 if fits else 1})")
    return [sys.executable, "-c", script]

  with pytest.raises(tpu.common.LaunchError, match=r"^the config does not fit in the memory of "
                     r"v4-8: 40.0 GiB > 32 GiB; try X$"):
    tpu.check_fits(check(False, "does not fit: 40.0 GiB > 32 GiB; try X"), "v4-8")
  tpu.check_fits(check(True, "fits: 1.0 GiB of 32 GiB"), "v4-8")  # no error
  # A crash (exit status 1 as a verdict's, but no report) is a failed check, not a verdict.
  with pytest.raises(tpu.common.LaunchError, match=r"the memory check .* failed \(1\): boom$"):
    tpu.check_fits([sys.executable, "-c", "import sys; sys.exit('boom')"], "v4-8")
