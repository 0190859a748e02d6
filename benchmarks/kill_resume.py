r"""Kill test: SIGKILLs a training run at N seeded random moments, some inside a checkpoint save,
resumes after each, and checks that every resumed run logs exactly the losses of an
uninterrupted run.

  python benchmarks/kill_resume.py --n 20              # the demo, 20 kills
  python benchmarks/kill_resume.py --n 3 --tiny        # a seconds-long model (what the tests run)

The kills are chained in one workdir: run, kill, resume (the next victim), kill, ..., and a last
resume runs to the end. A kill lands either when the run reaches a random step, or inside a save
(the moment orbax's temporary checkpoint directory appears). Each resumed run's logged losses
(metrics.jsonl rows past the step it resumed from) must equal the uninterrupted run's bit for bit.
Prints "K/N resumed bit-exact"; exits non-zero unless K == N.
"""
import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from mimjax import checkpoint
from mimjax import metric_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/helpers.py's tiny_config with total_steps=150, ckpt_every_steps=5, log_every_steps=1.
TINY = {"input.dataset": "offline_photos", "input.split": "train",
        "input.image_size": 16, "input.batch_size": 8, "model.variant": "mu/4",
        "model.decoder_width": 32, "model.decoder_depth": 1, "model.decoder_heads": 2,
        "total_steps": 150, "ckpt_every_steps": 5, "log_every_steps": 1, "image_every_steps": 0,
        "evals.knn.every_steps": -1}  # the demo's kNN is tested on its own
DEMO = {"ckpt_every_steps": 10, "log_every_steps": 1}


def train_cmd(workdir, overrides):
  return ([sys.executable, "-m", "mimjax.main", f"--config={ROOT}/configs/mae.py:demo",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in overrides.items()])


def child_env(cache_dir):
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  # Every resumed run compiles the same step: reuse the executables (same binaries, same bits).
  env.setdefault("JAX_COMPILATION_CACHE_DIR", cache_dir)
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


def metrics(workdir):
  """{step: training row} of metrics.jsonl (a row cut short by a kill is not a row)."""
  # Only training rows: evaluator rows share the step.
  return {row["step"]: row for row in metric_files.read(workdir) if "loss" in row}


class Console:
  """A run's output stream, read as it comes: which step the run itself has reached
  (metrics.jsonl still holds the rows of the run killed before it until the new run truncates
  them)."""

  def __init__(self, stream):
    self.lines = []
    self._thread = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
    self._thread.start()

  def step(self) -> int:
    steps = [int(m.group(1)) for m in map(STEP_LINE.match, list(self.lines)) if m]
    return max(steps, default=0)

  def text(self) -> str:
    self._thread.join()
    return "".join(self.lines)


STEP_LINE = re.compile(r"step (\d+)/\d+ \|")


def saving(workdir) -> bool:
  """Whether a checkpoint save is under way (orbax writes into a temporary directory first)."""
  directory = checkpoint.checkpoint_dir(workdir)
  return os.path.isdir(directory) and any("tmp" in name for name in os.listdir(directory))


def run_until(proc, console, workdir, target_step, in_save, timeout):
  """Waits for the kill moment: the run has itself printed step `target_step` (and, `in_save`,
  a save is under way); returns what it was, or None if the run ended first."""
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline:
    if console.step() >= target_step and (not in_save or saving(workdir)):
      proc.send_signal(signal.SIGKILL)
      step = console.step()
      if in_save:
        return f"inside a save (at step {step})"
      return f"at step {step}" + (" (a save was under way)" if saving(workdir) else "")
    time.sleep(0.001 if in_save else 0.005)
  if proc.poll() is None:
    proc.send_signal(signal.SIGKILL)
    return "at the timeout"
  return None


def resumed_from(stdout: str) -> int:
  match = re.search(r"Resuming from .* at step (\d+)", stdout)
  return int(match.group(1)) if match else 0


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--n", type=int, default=20, help="the number of kills")
  parser.add_argument("--seed", type=int, default=0, help="picks the kill moments")
  parser.add_argument("--tiny", action="store_true", help="a tiny model instead of the demo")
  parser.add_argument("--workdir", help="where the killed run goes (default: a fresh temp dir)")
  parser.add_argument("--reference", help="the metrics.jsonl of an uninterrupted run of the "
                      "same config (rows with step and loss at least; default: run one first)")
  parser.add_argument("--timeout", type=float, default=600, help="seconds per run")
  args = parser.parse_args()
  overrides = TINY if args.tiny else DEMO
  total = overrides.get("total_steps", 200)
  scratch = tempfile.mkdtemp(prefix="kill_resume_")
  env = child_env(os.path.join(scratch, "jax_cache"))
  workdir = args.workdir or os.path.join(scratch, "killed")

  if args.reference:
    reference = metrics(os.path.dirname(os.path.abspath(args.reference)))
  else:
    ref_dir = os.path.join(scratch, "uninterrupted")
    subprocess.run(train_cmd(ref_dir, overrides), env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    reference = metrics(ref_dir)
  assert len(reference) == total, f"the reference run logged {len(reference)} of {total} steps"

  rng = random.Random(args.seed)
  exact, kills = 0, 0
  for trial in range(args.n + 1):
    last = trial == args.n
    start = checkpoint.latest_step(workdir) or 0  # where this run resumes
    proc = subprocess.Popen(train_cmd(workdir, overrides), env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    console, errors = Console(proc.stdout), Console(proc.stderr)
    if last:
      moment = None
      proc.wait(timeout=args.timeout)
    else:
      in_save = rng.random() < 0.4
      target = min(start + rng.randint(1, 2 * overrides["ckpt_every_steps"]), total - 1)
      moment = run_until(proc, console, workdir, target, in_save, args.timeout)
    proc.wait()
    out, err = console.text(), errors.text()
    if trial > 0:  # this run resumed after a kill: its rows must be the reference's
      begin = resumed_from(out)
      assert begin == start, f"run {trial} resumed from step {begin}, not {start}:\n{out[-2000:]}"
      rows = {s: r for s, r in metrics(workdir).items() if s > begin}
      same = bool(rows) and all(r[key] == reference[s][key] for s, r in rows.items()
                                for key in ("loss", "grad_norm") if key in reference[s])
      exact += same
      print(f"resume {trial}: from step {begin}, {len(rows)} steps logged, "
            f"{'bit-exact' if same else 'DIFFERENT'}", flush=True)
    if last:
      if proc.returncode != 0:
        sys.exit(f"the last run failed:\n{err[-3000:]}")
    elif moment is None:
      sys.exit(f"run {trial} ended before its kill (exit {proc.returncode}):\n{err[-3000:]}")
    else:
      kills += 1
      print(f"kill {kills}: {moment}", flush=True)
  final = metrics(workdir)
  complete = sorted(final) == sorted(reference) and all(
      final[s]["loss"] == reference[s]["loss"] for s in reference)
  print(f"{exact}/{args.n} resumed bit-exact" + ("" if complete else
        "; the final metrics differ from the uninterrupted run"), flush=True)
  sys.exit(0 if exact == args.n and complete else 1)


if __name__ == "__main__":
  main()
