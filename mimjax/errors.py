"""Expected errors and how every command line tool reports them.

An expected error (a bad config value, path, dataset or checkpoint; storage that cannot be
reached or is full) is a `UserError`: the CLI prints one line naming what is wrong and how to
fix it, and exits with status 2. Anything else is a bug and keeps its traceback. `--verbose`
shows the traceback of expected errors too.

A CLI joins the seam in three lines:

    errors.define_verbose_flag()
    ...
    errors.exit_on_user_error(PROG, fn, ...)          # in the absl main
    app.run(main, flags_parser=errors.flags_parser(PROG))
"""
import errno
import os
import sys
import traceback

EXIT_USER_ERROR = 2


class UserError(Exception):
  """An error the user can fix; its message names what is wrong and what to do."""


class ConfigError(UserError, ValueError):
  """A config value that cannot work; the message names the key and the fix."""


class PathNotFoundError(UserError, FileNotFoundError):
  """A path the user gave that holds nothing usable (no such directory, or the wrong files)."""


class StorageFullError(UserError, OSError):
  """A write failed for lack of space (a full disk or an exhausted quota)."""


class StorageUnreachableError(UserError, OSError):
  """Storage that did not answer, or refused access, after the clients' own retries."""


def define_verbose_flag():
  """Defines the absl flag `--verbose` (tracebacks of expected errors too); idempotent."""
  from absl import flags  # local: the library itself needs no absl flags
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "Show the traceback of expected errors too.")


def refuse_empty_flags(*names: str):
  """The absl flags `names` (paths, names) refuse an empty value when parsed: `--out=` would
  otherwise mean the current directory, or fail late, after the expensive part."""
  from absl import flags
  for name in names:
    flags.register_validator(name, lambda v: "" not in (v if isinstance(v, list) else [v]),
                             message="give a value, not an empty string")


def quiet_library_logs():
  """absl logging at WARNING unless --verbosity was given: orbax and XLA log every save and
  backend probe at INFO, which buries the tool's own output (--verbosity=0 shows them again)."""
  from absl import flags
  from absl import logging
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def _verbose_requested(argv=None) -> bool:
  from absl import flags
  if "verbose" in flags.FLAGS and flags.FLAGS.is_parsed():
    return flags.FLAGS.verbose
  return any(a.lower() in ("--verbose", "-verbose", "--verbose=true", "--verbose=1")
             for a in argv or sys.argv)


def one_line(error: BaseException | str) -> str:
  return " ".join(str(error).split())


def report(prog: str, error: BaseException | str, verbose: bool = False):
  """Prints `prog: error: <one line>` (with the traceback when `verbose`) to stderr."""
  if verbose and isinstance(error, BaseException):
    traceback.print_exception(error)
  print(f"{prog}: error: {one_line(error)}", file=sys.stderr, flush=True)


def exit_on_user_error(prog: str, fn, *args, verbose: bool | None = None, **kwargs):
  """Calls `fn`; a UserError is reported in one line and exits with EXIT_USER_ERROR.

  `verbose` defaults to the `--verbose` flag when the CLI defined it.
  """
  try:
    return fn(*args, **kwargs)
  except UserError as e:
    report(prog, e, _verbose_requested() if verbose is None else verbose)
    sys.exit(EXIT_USER_ERROR)


def is_out_of_space(error: BaseException) -> bool:
  """Whether `error` (or an exception it was raised from) means a full disk or quota."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(error)
    # tensorstore and some file systems report the condition only in the message.
    if "No space left on device" in text or "Disk quota exceeded" in text:
      return True
    error = error.__cause__ or error.__context__
  return False


_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                       errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM}
# How tensorstore (absl status codes) and the HTTP clients name the same conditions.
_UNREACHABLE_TEXT = ("UNAVAILABLE:", "DEADLINE_EXCEEDED:", "PERMISSION_DENIED:", "UNAUTHENTICATED:",
                     "Cannot connect to host", "Connection refused", "Connection reset",
                     "Temporary failure in name resolution")


def is_storage_unreachable(error: BaseException) -> bool:
  """Whether `error` (or one it was raised from) means storage that did not answer or refused
  access: a condition of the connection or the credentials, not of the data stored there."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, (ConnectionError, TimeoutError, PermissionError)):
      return True
    if isinstance(error, OSError) and error.errno in _UNREACHABLE_ERRNOS:
      return True
    if any(marker in str(error) for marker in _UNREACHABLE_TEXT):
      return True
    error = error.__cause__ or error.__context__
  return False


# ---------------------------------------------------------------------------------------------
# Flag parsing: absl and ml_collections errors as one line.
# ---------------------------------------------------------------------------------------------
def _config_file_problem(flag) -> str | None:
  """Why a config-file flag's file could not be loaded (None when it loaded)."""
  try:
    flag.value.keys()  # ml_collections defers a load failure until the config is used
  except OSError:
    path = flag.config_filename
    if not path:
      return f"--{flag.name}: give a config file, e.g. configs/mae.py:demo (it is empty)"
    if not os.path.isfile(path):
      here = sorted(os.listdir(os.path.dirname(path) or ".")) if os.path.isdir(
          os.path.dirname(path) or ".") else "no such directory"
      return (f"--{flag.name}: the config file {path!r} does not exist (relative paths start "
              f"from {os.getcwd()}; its directory holds: {here})")
    return f"--{flag.name}: the config file {path!r} could not be loaded"
  except Exception:  # pylint: disable=broad-except
    return None  # not a ConfigDict; the tool's own checks will say what is wrong
  return None


def config_error_message(error: BaseException) -> str:
  """The one line that says what a flag, config override or config-file failure was.

  absl and ml_collections wrap the mistake (a misspelt key's KeyError nested in the args, a config
  file's traceback as text); the CLIs' flag parser, the sweep and the launchers unwrap it here.
  """
  text = str(error)
  if "Error whilst parsing config file" in text:
    # ml_collections re-raises with the config file's whole traceback as text: keep its last line.
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split(": ", 1)[-1] if "Error" in last.split(": ", 1)[0] else last
  while isinstance(error, BaseException) and error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]  # ml_collections nests the KeyError of a misspelt key
  if isinstance(error, KeyError) and error.args:
    return str(error.args[0])
  return str(error)


def _config_file_traceback_line(error: BaseException) -> str | None:
  """'the config file FILE raised Kind: message (line N)' when `error` came from a config file."""
  frames = traceback.extract_tb(error.__traceback__)
  package = os.path.dirname(os.path.abspath(__file__))
  inside = [f for f in frames if f.filename.endswith(".py") and "-packages" not in f.filename
            and not os.path.abspath(f.filename).startswith(package + os.sep)
            and not os.path.basename(f.filename).startswith("<")]
  if not inside:
    return None
  frame = inside[-1]
  return (f"the config file {frame.filename} raised {type(error).__name__}: {error} "
          f"(line {frame.lineno}); run with --verbose for the traceback")


def flags_parser(prog: str, flag_values=None):
  """An absl `flags_parser` for `app.run`: flag and config-file mistakes exit in one line."""
  from absl import flags
  flag_values = flags.FLAGS if flag_values is None else flag_values

  def parse(argv):
    try:
      remaining = flag_values(argv)
    except (flags.Error, UserError, KeyError, AttributeError, TypeError, ValueError) as e:
      # absl and ml_collections report a bad flag, override or config argument this way.
      _exit(prog, e, _config_file_traceback_line(e) or config_error_message(e), argv)
    except Exception as e:  # pylint: disable=broad-except
      # A config file's own code raised (ml_collections lets anything but OSError through).
      line = _config_file_traceback_line(e)
      if line is None:
        raise
      _exit(prog, e, line, argv)
    for name in list(flag_values):
      flag = flag_values[name]
      if _is_config_flag(flag) and flag.present:
        problem = _config_file_problem(flag)
        if problem:
          _exit(prog, None, problem, argv)
    return remaining

  return parse


def _is_config_flag(flag) -> bool:
  """Whether `flag` is an ml_collections config-file flag (only those name a file)."""
  return hasattr(type(flag), "config_filename")


def _exit(prog, error, line, argv):
  verbose = _verbose_requested(argv)
  if verbose and error is not None:
    traceback.print_exception(error)
  report(prog, line)
  sys.exit(EXIT_USER_ERROR)
