"""Expected errors and how every command line tool reports them.

An expected error (a bad config value, path, dataset or checkpoint; storage that cannot be
reached) is a `UserError`: the CLI prints one line naming what is wrong and how to fix it, and
exits with status 2. Anything else is a bug and keeps its traceback. `--verbose` shows the
traceback of expected errors too.
"""
import sys
import traceback

EXIT_USER_ERROR = 2


class UserError(Exception):
  """An error the user can fix; its message names what is wrong and what to do."""


def report(prog: str, error: BaseException, verbose: bool = False):
  """Prints `prog: error: <one line>` (with the traceback when `verbose`) to stderr."""
  if verbose:
    traceback.print_exception(error)
  message = " ".join(str(error).split())  # one line, whatever the message held
  print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def exit_on_user_error(prog: str, fn, *args, verbose: bool = False, **kwargs):
  """Calls `fn`; a UserError is reported in one line and exits with EXIT_USER_ERROR."""
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    report(prog, e, verbose)
    sys.exit(EXIT_USER_ERROR)


class PathNotFoundError(UserError, FileNotFoundError):
  """A path the user gave that holds nothing usable (no such directory, or the wrong files)."""


def parse_flags_or_exit(prog: str, flag_values, argv):
  """absl flag parsing for a CLI, a config override mistake (a misspelt key, a wrong type)
  reported as one line with EXIT_USER_ERROR."""
  from absl import flags  # local: this module stays import-free for the library code

  try:
    return flag_values(argv)
  except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
    while isinstance(e, BaseException) and e.args:  # ml_collections nests the KeyError
      e = e.args[0]
    print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)
