"""Runs many command lines of one mimjax command in this one process, as the command would.

  python -m tests.cli_fuzz_driver COMMAND

prints the command's flags as its parser declares them, {name: {"type", "choices"}}, on one
line; then reads one line of cases, [{"argv": [...], "run": bool}, ...], and prints one line of
results. Each case's flags are parsed by the command's own parser (absl's FLAGS through
errors.flags_parser, or the launchers' argparse) and, with "run", the command then goes on as its
entry point would (for the launchers and the sweep: everything they do). A result is {"code",
"stderr", "traceback", "seconds"}: the exit status (0 when nothing exited), what the command
wrote to sys.stderr, and the traceback of an exception that escaped.
"""
import argparse
import contextlib
import importlib
import io
import json
import os
import sys
import time
import traceback

from mimjax import tf_env  # pylint: disable=unused-import  (first, as in every command)

from mimjax import errors
from mimjax.launch import common
from mimjax.launch import targets

# command -> (module, prog); the absl commands keep their flags in absl.flags.FLAGS.
ABSL = {
    "mimjax-train": ("mimjax.main", "mimjax-train"),
    "mimjax-export": ("mimjax.export.cli", "mimjax-export"),
    "mimjax-eval": ("mimjax.evals.cli", "mimjax-eval"),
    "mimjax-analyze": ("mimjax.evals.analysis_cli", "mimjax-analyze"),
    "mimjax-compile": ("mimjax.compile", "mimjax-compile"),
}
# command -> (module, prog, the parser, the function main() runs with sys.argv[1:]).
ARGPARSE = {
    "mimjax-sweep": ("mimjax.sweeps.cli", "mimjax-sweep", lambda m: m.parser(),
                     lambda m: m._launch),  # pylint: disable=protected-access
    **{f"launch/{kind}.py": (f"mimjax.launch.{kind}", f"launch/{kind}.py",
                             lambda m, kind=kind: common.launcher_parser(targets.TARGETS[kind]),
                             lambda m: m.launch)
       for kind in targets.TARGETS},
}


def _absl_flags(module_name: str) -> dict:
  """The command's own flags (its module's and mimjax.errors' --verbose; not absl's)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  by_module = flags.FLAGS.flags_by_module_dict()
  result = {}
  for module in (module_name, "mimjax.errors"):
    for flag in by_module.get(module, []):
      parser = type(flag.parser).__name__
      kind = {"IntegerParser": "int", "FloatParser": "float", "BooleanParser": "bool",
              "EnumParser": "enum", "ListParser": "list", "ConfigFileFlagParser": "config"}.get(
                  parser, "string")
      if isinstance(flag, flags.MultiFlag):
        kind = "multi_" + kind
      result[flag.name] = {"type": kind, "choices": getattr(flag.parser, "enum_values", None)}
  return result


def _argparse_flags(parser: argparse.ArgumentParser) -> dict:
  result = {}
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._HelpAction):  # pylint: disable=protected-access
      continue
    name = action.option_strings[-1].removeprefix("--")
    if isinstance(action, argparse._StoreTrueAction):  # pylint: disable=protected-access
      kind = "bool"
    elif action.choices is not None:
      kind = "enum"
    elif isinstance(action, argparse._AppendAction):  # pylint: disable=protected-access
      kind = "multi_string"
    else:
      # The type by its name: the launchers' bounded integers are functions named "int".
      kind = {"int": "int", "float": "float"}.get(getattr(action.type, "__name__", ""), "string")
    result[name] = {"type": kind, "choices": list(action.choices) if action.choices else None}
  return result


def _outcome(fn) -> dict:
  stderr, code, trace, start = io.StringIO(), 0, None, time.perf_counter()
  with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
    try:
      fn()
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # pylint: disable=broad-except
      trace, code = traceback.format_exc(), 1
  return {"code": code, "stderr": stderr.getvalue(), "traceback": trace,
          "seconds": round(time.perf_counter() - start, 2)}


def main():
  command = sys.argv[1]
  # The protocol goes through a copy of stdout; what the command or a library prints on the real
  # one (fd 1) goes to stderr instead.
  protocol = os.fdopen(os.dup(1), "w")
  os.dup2(2, 1)
  if command in ABSL:
    module_name, prog = ABSL[command]
    sys.argv = [prog]
    module = importlib.import_module(module_name)
    from absl import flags  # pylint: disable=g-import-not-at-top
    declared = _absl_flags(module_name)

    def case(argv, run):
      flags.FLAGS.unparse_flags()
      sys.argv = [prog, *argv]  # ml_collections reads the config overrides from sys.argv
      errors.flags_parser(prog)(sys.argv)
      if run:
        module.run(sys.argv)
  else:
    module_name, prog, make_parser, fn = ARGPARSE[command]
    module = importlib.import_module(module_name)
    declared = _argparse_flags(make_parser(module))

    def case(argv, run):
      if run:
        sys.exit(errors.exit_on_user_error(prog, fn(module), argv) or 0)
      errors.exit_on_user_error(prog, make_parser(module).parse_args, argv)

  print(json.dumps(declared), file=protocol, flush=True)
  cases = json.loads(sys.stdin.readline() or "[]")
  results = [_outcome(lambda c=c: case(c["argv"], c.get("run", False))) for c in cases]
  print(json.dumps(results), file=protocol, flush=True)


if __name__ == "__main__":
  main()
