"""The tests' helpers, one home for each: tiny configs, the CLIs in subprocesses, losses, the
stand-in cloud, sweep files and small image datasets (a plain module: conftest is not importable).
"""
import importlib
import os
import socket
import subprocess
import sys

import numpy as np
from PIL import Image

from mimjax import data
from mimjax import metric_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Configs.


def load_config(method: str, arg: str | None = None):
  """configs/{method}.py's get_config(arg), the config the CLI loads."""
  return importlib.import_module(f"configs.{method}").get_config(arg)


def tiny_config(method: str, **overrides):
  """The demo config shrunk to seconds: mu/4 on 16 px images of the bundled photos, batch 8."""
  c = load_config(method, "demo")
  c.input.dataset, c.input.split = "offline_photos", "train"  # 160 images, 20 classes
  c.input.image_size = 16
  c.input.batch_size = 8
  c.model.variant = "mu/4"
  c.model.decoder_width = 32
  c.model.decoder_depth = 1
  c.model.decoder_heads = 2
  if method == "lut":
    c.model.head_hidden = 64
  c.total_steps = 4
  c.log_every_steps = 1
  c.ckpt_every_steps = 2
  c.image_every_steps = 0
  for entry in c.evals.values():  # the demo's evaluators are tested on their own
    entry.every_steps = -1
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


def cli_flags(method: str, workdir: str, **overrides) -> list[str]:
  """Command-line flags that give `tiny_config(method, **overrides)`."""
  c = tiny_config(method, **overrides)
  keys = ["input.dataset", "input.split", "input.image_size", "input.batch_size", "model.variant",
          "model.decoder_width", "model.decoder_depth", "model.decoder_heads", "total_steps",
          "log_every_steps", "ckpt_every_steps", "image_every_steps"] + [
              f"evals.{name}.every_steps" for name in c.evals] + list(overrides)
  if method == "lut":
    keys.append("model.head_hidden")
  flags = [f"--config={ROOT}/configs/{method}.py:demo", f"--workdir={workdir}"]
  for key in dict.fromkeys(keys):
    value = c
    for part in key.split("."):
      value = value[part]
    flags.append(f"--config.{key}={value}")
  return flags


# The CLIs in subprocesses.


def cli_env(devices: int = 1) -> dict:
  env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
  # As from a shell: the CLIs set these themselves (mimjax/tf_env.py), and that is under test.
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  env.pop("TF_ENABLE_ONEDNN_OPTS", None)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def train_cmd(method: str, workdir: str, **overrides) -> list[str]:
  return [sys.executable, "-m", "mimjax.main", *cli_flags(method, workdir, **overrides)]


def run_cli(args, devices: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
  return subprocess.run(args, env=cli_env(devices), capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT)


def start(args, env=None) -> subprocess.Popen:
  """`args` running, its stdout and stderr in one text stream."""
  return subprocess.Popen(args, env=env or cli_env(), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def read_until(process: subprocess.Popen, marker: str) -> str:
  """Reads `process`'s output up to the first line holding `marker`."""
  seen = []
  for line in process.stdout:
    seen.append(line)
    if marker in line:
      return "".join(seen)
  raise AssertionError(f"{marker!r} never printed:\n{''.join(seen)}")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start_two_processes(train_args: list[str]) -> list[subprocess.Popen]:
  """`python -m mimjax.main TRAIN_ARGS` as two processes of one jax.distributed run over
  127.0.0.1, one CPU device each."""
  port = free_port()
  return [subprocess.Popen(
      [sys.executable, "-m", "mimjax.main", *train_args, "--distributed",
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      env=cli_env(devices=1), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]


# What a run leaves.


def losses(workdir) -> dict[int, float]:
  """step -> loss of a workdir, local or gs://."""
  return {r["step"]: r["loss"] for r in metric_files.read(workdir) if "loss" in r}


def traced_steps(xplane) -> set[int]:
  """The step numbers of the trainer's step marks in a jax.profiler trace (`*.xplane.pb`, an
  epath.Path or a local pathlib.Path)."""
  from jax import profiler  # pylint: disable=g-import-not-at-top
  trace = profiler.ProfileData.from_serialized_xspace(xplane.read_bytes())
  return {dict(event.stats)["step_num"] for plane in trace.planes for line in plane.lines
          for event in line.events if event.name == "train"}


# Launchers and the stand-in cloud (tests/launch/bin/).

# The launch and storage tests' runs: the tiny MAE demo, 12 steps, a checkpoint every 2 (long
# enough that a signal sent on an early step's log line lands while the run is still going, on a
# fast machine).
STEPS = dict(total_steps=12, ckpt_every_steps=2)


def use_fake_cloud(monkeypatch, state) -> None:
  """The stand-ins (tests/launch/bin/) first on PATH, their state and log of calls in `state`."""
  bin_dir = os.path.join(ROOT, "tests", "launch", "bin")
  monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ["PATH"])
  monkeypatch.setenv("MIMJAX_FAKE_CLOUD", str(state))
  monkeypatch.setenv("MIMJAX_TEST_PYTHON", sys.executable)


def launcher(target: str) -> list[str]:
  return [sys.executable, os.path.join(ROOT, "launch", f"{target}.py")]


# Sweeps.

SWEEP_CLI = os.path.join(ROOT, "launch", "sweep.py")
CONFIG = f"{ROOT}/configs/mae.py:demo"


def tiny_flags(**overrides) -> list[str]:
  """The trainer flags after `--` that shrink the demo to `tiny_config`."""
  return [f for f in cli_flags("mae", "unused", **overrides)
          if not f.startswith(("--config=", "--workdir="))]


def write_sweep(path, trials) -> str:
  """A sweep file whose get_sweep() returns `trials` (a list of dicts, as Python source)."""
  path.write_text(f"def get_sweep(arg=None):\n  return {trials!r}\n")
  return str(path)


def sweep_cmd(sweep_file: str, root: str, *flags, trainer_flags=()) -> list[str]:
  return [sys.executable, SWEEP_CLI, f"--config={CONFIG}", f"--sweep={sweep_file}",
          f"--root={root}", *flags, "--", *trainer_flags]


def sweep_env() -> dict:
  """The trainers' environment, CPU only (the sweep then needs no device probe)."""
  return dict(cli_env(), JAX_PLATFORMS="cpu")


def run_sweep(args, timeout=600) -> subprocess.CompletedProcess:
  return subprocess.run(args, env=sweep_env(), capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT)


# Small image datasets for the data tests.

NUM_CLASSES = 3
PER_CLASS = 8  # 24 images: batch 8 -> 3 steps per epoch
TFDS_TRAIN = 40


def smooth_image(rng, height, width):
  """A smooth, colourful uint8 image: low-resolution noise upsampled."""
  small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def write_folder(root, rng, num_classes=NUM_CLASSES, per_class=PER_CLASS):
  """Class subfolders of small JPEGs (and a few PNGs) of varied sizes and aspect ratios."""
  sizes = [(40, 56), (56, 40), (48, 48), (36, 64)]
  for c in range(num_classes):
    os.makedirs(os.path.join(root, f"class_{c}"))
    for i in range(per_class):
      image = Image.fromarray(smooth_image(rng, *sizes[i % len(sizes)]))
      ext = "png" if i == per_class - 1 else "jpg"
      image.save(os.path.join(root, f"class_{c}", f"img_{i}.{ext}"))
  return root


def data_config(**overrides):
  """The data package's default config, batch 8 of 32 px images on 2 threads."""
  cfg = data.make_default_config()
  cfg.update(dict(batch_size=8, image_size=32, num_threads=2))
  cfg.update(overrides)
  return cfg


def take(it, n):
  return [next(it) for _ in range(n)]
