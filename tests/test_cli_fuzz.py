"""Every flag of every command fuzzed, as tests/test_config_fuzz.py fuzzes the config's leaves.

The flags come from each command's own parser (absl's FLAGS, the launchers' argparse), and each
gets the values a user gets wrong: one of the wrong type; for a number zero, a negative and,
where it has one, a value beyond its range; for a path or a name the empty string and a path that
does not exist (or a value of the wrong form); for a choice one that is not offered. Each is
refused in one line `PROG: error: ...` that names the flag or the value, with exit status 2 and no
traceback, or accepted where it means something (0: none; a directory that is created). SPEC
says which, per flag; a flag without an entry fails the test, so that a new flag cannot go
unfuzzed.

The cases of a command run in one process (tests/cli_fuzz_driver.py): the flag parsing, and,
for a value only the command can judge (a missing model, a checkpoint step), the command's own
start, which refuses it before the expensive part. One real invocation per command checks the
same promise end to end, with the `tpu` extra installed and no JAX_PLATFORMS set: stderr holds
exactly the command's one line (no libtpu or TensorFlow start-up noise).
"""
import dataclasses
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from mimjax.launch import targets
from tests import cli_fuzz_driver
from tests import helpers

PARSE = "refused when the flags are parsed"
RUN = "refused when the command starts, before the expensive part"


@dataclasses.dataclass(frozen=True)
class Accepted:
  why: str


@dataclasses.dataclass(frozen=True)
class Number:
  """An int or float flag: its wrong type and a negative are always refused when parsed."""
  zero: str | Accepted = PARSE
  beyond: tuple[str, str | Accepted] | None = None  # a value above the range, where there is one
  context: tuple[tuple[str, str], ...] = ()  # other flags that make the value matter


@dataclasses.dataclass(frozen=True)
class Text:
  """A path or a name: the empty string, and `bad` (a missing path, a value of the wrong form)."""
  empty: str | Accepted = PARSE
  bad: tuple[str, str | Accepted] | None = None
  context: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Switch:
  """A boolean flag: a value that is not one."""


@dataclasses.dataclass(frozen=True)
class Choice:
  """An enum flag: a value outside its choices."""


NOWHERE = "/no/such/path"
CONFIG = "configs/mae.py:demo"
V1 = "tests/fixtures/v1/workdir"  # a small training workdir: a model to load
CREATED = Accepted("a directory that is created")
NONE = Accepted("the default: none")
KNN_SPLITS = {"train_split": "train[:75%]", "val_split": "train[75%:]"}  # the offline photos'

# The launch targets' options: the same flags in launch/KIND.py and (prefixed) in mimjax-sweep.
TARGET_OPTIONS = {
    "processes": Number(), "devices_per_process": Number(), "gpus": Number(),
    "port": Number(beyond=("65536", PARSE)),
    "nodes": Number(), "gpus_per_node": Number(zero=Accepted("CPU nodes, one task per node")),
    "partition": Text(), "account": Text(), "job_name": Text(),
    "time": Text(bad=("24h", RUN)),
    "cpus_per_task": Number(zero=Accepted("the cluster's default")),
    # sbatch --signal's own range starts at 0: the signal at the limit, KillWait before the kill.
    "signal_seconds": Number(zero=Accepted("at the time limit"), beyond=("65536", PARSE)),
    # A path on the cluster's nodes or the TPU workers, not here: a dry run prints it.
    "python": Text(bad=(NOWHERE, Accepted("a path on the machines that run the trainer"))),
    "launch_dir": Text(bad=(NOWHERE, CREATED)),
    "sbatch": Text(),  # any further #SBATCH option: sbatch judges it
    "name": Text(), "zone": Text(), "runtime_version": Text(), "project": Text(),
    "accelerator_type": Text(bad=("v9-8", RUN)),
    "max_restarts": Number(zero=Accepted("a preemption ends the run")),
    "spot": Switch(), "queued": Switch(), "keep": Switch(), "skip_compile_check": Switch(),
}
TPU = {"name": "fuzz", "zone": "us-central1-a", "accelerator_type": "v5litepod-8"}
LAUNCHER_FLAGS = {"verbose": Switch(), "dry_run": Switch()}


def _options(kind: str) -> dict:
  """The fuzz entries of a target's options (those TARGET_OPTIONS has: a new option without one
  is named by test_every_flag_has_a_fuzz_entry)."""
  names = [f.name for f in dataclasses.fields(targets.TARGETS[kind]) if "help" in f.metadata]
  return {name: TARGET_OPTIONS[name] for name in names if name in TARGET_OPTIONS}


def _sweep_spec() -> dict:
  """mimjax-sweep's flags: its own, and each target's options under the target's prefix (given
  with --target=KIND, which is when they count)."""
  spec = {
      "verbose": Switch(), "dry_run": Switch(), "target": Choice(),
      "config": Text(bad=("/no/such/config.py", RUN)),
      "sweep": Text(bad=("/no/such/sweep.py", RUN)),
      "root": Text(bad=(NOWHERE, Accepted("created by the first trial (a dry run writes none)"))),
      "report": Text(bad=(NOWHERE, RUN)),
      "parallel": Number(),
  }
  for kind in targets.TARGETS:
    context = (("target", kind),) + ((("root", "gs://bucket/sweep"),) if kind == "tpu" else ())
    for name, entry in _options(kind).items():
      if isinstance(entry, (Number, Text)):
        tpu = tuple((k, v) for k, v in TPU.items() if k != name) if kind == "tpu" else ()
        entry = dataclasses.replace(entry, context=context + tpu)
      spec[targets.TARGETS[kind].sweep_prefix + name] = entry
  return spec


SPEC = {
    "mimjax-train": {
        "config": Text(bad=("/no/such/config.py", PARSE)),
        "workdir": Text(bad=(NOWHERE, Accepted("a new run: its workdir is created"))),
        "distributed": Switch(),
        "coordinator_address": Text(bad=("10.0.0.2", PARSE)),  # no port
        "num_processes": Number(),
        "process_id": Number(zero=Accepted("process 0"), beyond=("2", PARSE),
                             context=(("num_processes", "2"),)),
        "verbose": Switch(),
    },
    "mimjax-export": {
        "workdir": Text(bad=(NOWHERE, RUN)),
        "step": Number(zero=RUN, beyond=("999", RUN)),  # the workdir has step 2 only
        "format": Choice(),
        "out": Text(bad=(NOWHERE, CREATED)),
        "num_classes": Number(zero=Accepted("no head: the encoder alone")),
        "global_pool": Choice(),
        "verbose": Switch(),
    },
    "mimjax-eval": {
        "model": Text(bad=(NOWHERE, RUN)),
        "eval": Choice(),
        "dataset": Text(bad=("no_such_dataset", RUN)),
        "folder": Text(empty=NONE, bad=(NOWHERE, RUN), context=(("dataset", "folder"),)),
        "data_dir": Text(empty=Accepted("tfds's default directory"), bad=(NOWHERE, RUN),
                         context=(("dataset", "imagenet2012"),)),
        "train_split": Text(bad=("no_such_split[", RUN)),
        "val_split": Text(bad=("no_such_split[", RUN)),
        "batch_size": Number(),
        "image_size": Number(zero=Accepted("the model's own image size")),
        "feature": Choice(),
        "k": Number(), "temperature": Number(), "epochs": Number(), "base_lr": Number(),
        "probe_batch_size": Number(),
        "out": Text(empty=Accepted("the default: printed only"), bad=(NOWHERE, CREATED)),
        "verbose": Switch(),
    },
    "mimjax-analyze": {
        "model": Text(bad=(NOWHERE, RUN)),
        "name": Text(),  # any label
        "out": Text(bad=(NOWHERE, CREATED)),
        "dataset": Text(bad=("no_such_dataset", RUN)),
        "folder": Text(empty=NONE, bad=(NOWHERE, RUN), context=(("dataset", "folder"),)),
        "data_dir": Text(empty=Accepted("tfds's default directory"), bad=(NOWHERE, RUN),
                         context=(("dataset", "imagenet2012"),)),
        "split": Text(bad=("no_such_split[", RUN)),
        "num_images": Number(), "batch_size": Number(),
        "image_size": Number(zero=Accepted("the model's own image size")),
        # The form when parsed; the layers and heads the model has once it is loaded.
        "heads": Text(empty=Accepted("every head of the last layer"), bad=("x", PARSE)),
        "num_map_images": Number(zero=Accepted("no attention-map figure")),
        "verbose": Switch(),
    },
    "mimjax-compile": {
        "config": Text(bad=("/no/such/config.py", PARSE)),
        "topology": Text(bad=("v9-8", PARSE)),
        "report": Text(bad=(NOWHERE, CREATED)),
        "mfu": Number(beyond=("1.5", PARSE)),
        "compare_meshes": Switch(),
        "verbose": Switch(),
    },
    "mimjax-sweep": _sweep_spec(),
    **{f"launch/{kind}.py": {**LAUNCHER_FLAGS, **_options(kind)} for kind in targets.TARGETS},
}


def _base(command: str, tmp: str) -> tuple[dict, list[str]]:
  """(flags, trainer flags after `--`) of a command line that would run."""
  trainer = ["--config", CONFIG, "--workdir", os.path.join(tmp, "run")]
  return {
      "mimjax-train": ({"config": CONFIG, "workdir": os.path.join(tmp, "train")}, []),
      "mimjax-export": ({"workdir": V1, "format": "hf", "out": os.path.join(tmp, "export")}, []),
      "mimjax-eval": ({"model": V1, "eval": "knn", **KNN_SPLITS}, []),
      "mimjax-analyze": ({"model": V1, "out": os.path.join(tmp, "analysis"), "num_images": "4"},
                         []),
      "mimjax-compile": ({"config": CONFIG}, []),
      "mimjax-sweep": ({"config": CONFIG, "sweep": "configs/sweeps/mae_demo.py",
                        "root": os.path.join(tmp, "sweep"), "dry_run": True}, []),
      "launch/local.py": ({"dry_run": True}, trainer),
      "launch/slurm.py": ({"nodes": "1", "gpus_per_node": "0", "dry_run": True}, trainer),
      "launch/tpu.py": ({**TPU, "skip_compile_check": True, "dry_run": True},
                        ["--config", CONFIG, "--workdir", "gs://bucket/run"]),
  }[command]


def _argv(command: str, tmp: str, flag: str, value: str, context=()) -> list[str]:
  base, trainer = _base(command, tmp)
  given = {**base, **dict(context), flag: value}
  argv = [f"--{k}" if v is True else f"--{k}={v}" for k, v in given.items()]
  return argv + (["--", *trainer] if trainer else [])


def cases(kind: str, entry) -> list[tuple[str, str | Accepted, tuple]]:
  """(value, expectation, context) of each value a flag of this `kind` and SPEC `entry` gets."""
  if isinstance(entry, Switch):
    return [("maybe", PARSE, ())]
  if isinstance(entry, Choice):
    return [("no_such_choice", PARSE, ())]
  if isinstance(entry, Number):
    wrong = "1.5" if kind == "int" else "abc"
    values = [(wrong, PARSE), ("0", entry.zero), ("-1", PARSE)] + (
        [entry.beyond] if entry.beyond else [])
  else:
    values = [("", entry.empty)] + ([entry.bad] if entry.bad else [])
  return [(v, e, entry.context) for v, e in values]


def _driver_env() -> dict:
  return dict(os.environ, PYTHONPATH=helpers.ROOT)


@functools.cache
def fuzz(command: str) -> tuple[dict, list[tuple], list[dict]]:
  """(the flags the command's parser declares, the cases, their results): one process."""
  tmp = tempfile.mkdtemp(prefix="mimjax_cli_fuzz_")
  with tempfile.TemporaryFile("w+") as stderr:
    driver = subprocess.Popen([sys.executable, "-m", "tests.cli_fuzz_driver", command],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                              text=True, cwd=helpers.ROOT, env=_driver_env())
    try:
      declared = json.loads(driver.stdout.readline() or "null")
      todo = []
      for flag, info in (declared or {}).items():
        if flag not in SPEC[command]:
          continue  # test_every_flag_has_a_fuzz_entry names it
        for value, expected, context in cases(info["type"], SPEC[command][flag]):
          # What the parser refuses is checked by parsing alone, what the command judges by
          # running it. An accepted value runs the launchers and the sweep (their targets are
          # built from the flags; the runs are dry) but not the absl commands, whose run is the
          # real work, nor a sweep on a gs:// root, whose dry run reads the root (launch/tpu.py's
          # dry run builds the same target from the same values).
          run = expected == RUN or (command in cli_fuzz_driver.ARGPARSE and expected != PARSE
                                    and "gs://" not in dict(context).get("root", ""))
          todo.append((flag, value, expected, {"argv": _argv(command, tmp, flag, value, context),
                                               "run": run}))
      out, _ = driver.communicate(json.dumps([t[-1] for t in todo]) + "\n", timeout=600)
    finally:
      if driver.poll() is None:
        driver.kill()
      shutil.rmtree(tmp, ignore_errors=True)
    stderr.seek(0)
    assert declared is not None and driver.returncode == 0, stderr.read()[-3000:]
  return declared, todo, json.loads(out)


def _expected_class(kind: str):
  return {"int": Number, "float": Number, "bool": Switch, "enum": Choice}.get(kind, Text)


@pytest.mark.parametrize("command", SPEC)
def test_every_flag_has_a_fuzz_entry(command):
  declared, _, _ = fuzz(command)
  missing = sorted(set(declared) - set(SPEC[command]))
  assert not missing, f"add these flags of {command} to SPEC (how each is fuzzed): {missing}"
  stale = sorted(set(SPEC[command]) - set(declared))
  assert not stale, f"SPEC names flags that {command} does not have: {stale}"
  wrong = {f: d["type"] for f, d in declared.items()
           if not isinstance(SPEC[command][f], _expected_class(d["type"]))}
  assert not wrong, f"SPEC's entries do not match these flags' types: {wrong}"


def _problem(command: str, flag: str, value: str, expected, result: dict) -> str | None:
  """What is wrong with `result` (None: it is as expected)."""
  label = f"--{flag}={value!r}: "
  if result["traceback"]:
    return label + "traceback:\n" + result["traceback"][-1500:]
  if isinstance(expected, Accepted):
    if result["code"] != 0 or "Traceback" in result["stderr"]:
      return label + f"should be accepted ({expected.why}); exit {result['code']}: " + (
          result["stderr"][-500:])
    return None
  lines = result["stderr"].splitlines()
  if result["code"] != 2 or len(lines) != 1 or not lines[0].startswith(f"{command}: error: "):
    return label + f"should be {expected}: exit {result['code']}, stderr " + (
        repr(result["stderr"][-800:]))
  if f"--{flag}" not in lines[0] and (not value or value not in lines[0]):
    return label + f"the error names neither the flag nor the value: {lines[0]!r}"
  return None


@pytest.mark.parametrize("command", SPEC)
def test_every_flag_refuses_its_wrong_values_in_one_line(command):
  _, todo, results = fuzz(command)
  problems = [p for (flag, value, expected, _), r in zip(todo, results)
              if (p := _problem(command, flag, value, expected, r))]
  assert not problems, f"{len(problems)} of {len(todo)} cases:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# The real commands, as a user starts them: with the `tpu` extra installed (libtpu) on a
# machine without TPUs, and no JAX_PLATFORMS set, stderr is the one line and nothing else.
# ---------------------------------------------------------------------------------------------
TRAINER = ["--", "--config", CONFIG, "--workdir", "/tmp/mimjax_cli_fuzz_run"]
REAL = {
    # After JAX's backends start (the device count): where libtpu would probe for TPU hosts.
    "mimjax-train": (["-m", "mimjax.main", f"--config={CONFIG}", "--workdir=WORKDIR",
                      "--config.mesh.data=3"],
                     "config.mesh.data: data x fsdp = 3 x 1 must equal the 1 devices (or use "
                     "data=-1)"),
    "mimjax-compile": (["-m", "mimjax.compile", f"--config={CONFIG}", "--config.mesh.data=3"],
                       "config.mesh.data: data x fsdp = 3 x 1 must equal the 1 devices (or use "
                       "data=-1)"),
    # After the model is loaded.
    "mimjax-analyze": (["-m", "mimjax.evals.analysis_cli", f"--model={V1}", "--out=WORKDIR",
                        "--heads=99:0"],
                       "--heads: '99:0' is not LAYER:HEAD with LAYER in 1..1 and HEAD in 0..1"),
    "mimjax-export": (["-m", "mimjax.export.cli", f"--workdir={V1}", "--format=hf",
                       "--out=WORKDIR", "--step=999"],
                      "no complete checkpoint for step 999; available steps: [2]"),
    # When the flags are parsed, or the command starts.
    "mimjax-eval": (["-m", "mimjax.evals.cli", "--model=WORKDIR", "--eval=knn", "--k=0"],
                    "flag --k=0: 0 is not a positive integer"),
    "mimjax-sweep": (["-m", "mimjax.sweeps.cli", f"--config={CONFIG}",
                      "--sweep=/no/such/sweep.py", "--root=WORKDIR", "--dry_run"],
                     "--sweep: no sweep file '/no/such/sweep.py': give FILE.py[:ARG]"),
    "launch/local.py": (["launch/local.py", "--processes=0", "--dry_run", *TRAINER],
                        "argument --processes: 0 is out of range: give an integer >= 1 (see "
                        "launch/local.py --help)"),
    "launch/slurm.py": (["launch/slurm.py", "--nodes=1", "--gpus_per_node=0", "--time=24h",
                         "--dry_run", *TRAINER],
                        "--time=24h: use SLURM's form, e.g. 24:00:00 or 2-00:00:00"),
    "launch/tpu.py": (["launch/tpu.py", *(f"--{k}={v}" for k, v in TPU.items()),
                       "--max_restarts=-1", "--dry_run", *TRAINER],
                      "argument --max_restarts: -1 is out of range: give an integer >= 0 (see "
                      "launch/tpu.py --help)"),
}


def test_every_command_is_fuzzed_and_started_for_real():
  with open(os.path.join(helpers.ROOT, "setup.py")) as f:
    scripts = dict(re.findall(r'"(mimjax-[\w-]+) = ([\w.]+):main"', f.read()))
  # launch/sweep.py is mimjax-sweep.
  launchers = {f"launch/{name}" for name in os.listdir(os.path.join(helpers.ROOT, "launch"))
               if name.endswith(".py") and name != "sweep.py"}
  assert set(SPEC) == set(REAL) == set(scripts) | launchers
  modules = {c: m for c, (m, *_) in {**cli_fuzz_driver.ABSL, **cli_fuzz_driver.ARGPARSE}.items()}
  assert {c: modules[c] for c in scripts} == scripts


@pytest.mark.parametrize("command", REAL)
def test_a_real_command_prints_its_one_line_and_nothing_else(command, tmp_path):
  args, line = REAL[command]
  env = helpers.cli_env()
  env.pop("JAX_PLATFORMS", None)  # mimjax/tf_env.py chooses, as on a user's machine
  args = [a.replace("WORKDIR", str(tmp_path / "w")) for a in args]
  out = subprocess.run([sys.executable, *args], env=env, cwd=helpers.ROOT, capture_output=True,
                       text=True, timeout=300)
  assert (out.returncode, out.stderr) == (2, f"{command}: error: {line}\n")
