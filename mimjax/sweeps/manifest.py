"""The sweep root's manifest, `ROOT/sweep.json`: the base config, and per trial its overrides,
workdir (relative to the root), step count and full config.

It is written whole (object stores cannot append) before the first trial starts. Running the
sweep again merges into it: a trial already listed keeps its name and must have the same config
as before; trials no longer in the sweep file stay listed (their results stay in the report).
"""
import json
from typing import Any

from etils import epath

from mimjax import storage
from mimjax.sweeps import trials as trials_lib

FILENAME = "sweep.json"
VERSION = 1


def path(root: str) -> epath.Path:
  return epath.Path(root) / FILENAME


def read(root: str) -> dict[str, Any] | None:
  """The manifest under `root`, or None when there is none yet."""
  storage.check_bucket(root)  # storage that does not answer: one line, in bounded time
  p = path(root)
  if not p.exists():
    return None
  try:
    manifest = json.loads(p.read_text())
  except json.JSONDecodeError as e:
    raise trials_lib.SweepError(f"{p} is not valid JSON ({e}): restore it or use a new --root")
  if manifest.get("version") != VERSION:
    raise trials_lib.SweepError(f"{p} has manifest version {manifest.get('version')!r}, this "
                                f"mimjax writes version {VERSION}: use a new --root")
  return manifest


def write(root: str, manifest: dict[str, Any]):
  p = path(root)
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_text(json.dumps(manifest, indent=1, sort_keys=False, default=repr) + "\n")


def identity(overrides: dict[str, Any]) -> str:
  return json.dumps(overrides, sort_keys=True, default=repr)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
  """`config.KEY: OLD then, NEW now` for each key whose value differs."""
  a, b = _flatten(before), _flatten(now)
  return [f"config.{k}: {a.get(k)!r} then, {b.get(k)!r} now"
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def assign_names(existing: dict[str, Any] | None, overrides: list[dict[str, Any]]) -> list[str]:
  """Names for the sweep's trials: a trial already in the manifest keeps its recorded name."""
  recorded = {identity(t["overrides"]): t["name"] for t in (existing or {}).get("trials", [])}
  taken = {t["name"]: identity(t["overrides"]) for t in (existing or {}).get("trials", [])}
  fresh = trials_lib.name_trials(overrides, taken)
  return [recorded.get(identity(o), n) for o, n in zip(overrides, fresh)]


def merge(existing: dict[str, Any] | None, base: trials_lib.Base,
          trials: list[trials_lib.Trial]) -> dict[str, Any]:
  """The manifest with `trials` recorded; refuses a listed trial whose config has changed."""
  entries = {t["name"]: t for t in (existing or {}).get("trials", [])}
  for trial in trials:
    config = json.loads(trial.config.to_json())
    if trial.name in entries:
      changes = config_changes(entries[trial.name]["config"], config)
      if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise trials_lib.SweepError(
            f"{trial.label()} already ran in this root with another config ({shown}): its "
            "checkpoints belong to that config; restore the base config or use a new --root")
    entries[trial.name] = {"name": trial.name, "overrides": trial.overrides,
                           "workdir": trial.name, "total_steps": trial.total_steps,
                           "config": config}
  return {"version": VERSION, "base": {"config": base.config, "flags": list(base.flags)},
          "trials": list(entries.values())}


def workdir(root: str, name: str) -> str:
  """A trial's workdir: ROOT/name (the manifest records it relative to the root)."""
  return str(epath.Path(root) / name)
