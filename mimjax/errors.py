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
