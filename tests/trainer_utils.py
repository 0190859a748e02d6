"""Helpers for trainer tests: tiny configs and the CLI in a subprocess."""
import importlib
import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(method: str, arg: str | None = None):
  """configs/{method}.py's get_config(arg), the config the CLI loads."""
  return importlib.import_module(f"configs.{method}").get_config(arg)


def tiny_config(method: str, **overrides):
  """The demo config shrunk to seconds: mu/4 on 16 px images, batch 8."""
  c = load_config(method, "demo")
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
  keys = ["input.image_size", "input.batch_size", "model.variant", "model.decoder_width",
          "model.decoder_depth", "model.decoder_heads", "total_steps", "log_every_steps",
          "ckpt_every_steps", "image_every_steps"] + [
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


def losses(workdir: str) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def traced_steps(xplane) -> set[int]:
  """The step numbers of the trainer's step marks in a jax.profiler trace (`*.xplane.pb`, an
  epath.Path or a local pathlib.Path)."""
  from jax import profiler  # pylint: disable=g-import-not-at-top
  data = profiler.ProfileData.from_serialized_xspace(xplane.read_bytes())
  return {dict(event.stats)["step_num"] for plane in data.planes for line in plane.lines
          for event in line.events if event.name == "train"}
