"""Export of a training workdir's checkpoint (what mimjax-export runs), free of flags."""
from etils import epath

from mimjax import errors


def export_workdir(workdir: str, step: int | None, fmt: str, out: str, num_classes: int = 0,
                   global_pool: str = "token"):
  """Writes `step` (default: the latest) of `workdir` as `fmt` ('hf' or 'timm') into `out`."""
  from mimjax import export
  from mimjax import state as state_lib
  from mimjax import storage

  config, step, state = state_lib.restore_state(workdir, step)
  _make_output_dir(out)
  kwargs = state_lib.model_kwargs(config)
  params = state["params"]
  if fmt == "hf" and export.timm_vit.is_classifier(params):
    export.save_hf_classifier(params, kwargs, config.input.image_size, out)
  elif fmt == "hf":
    export.save_hf(params, kwargs, config.input.image_size, out)
  else:
    export.save_timm(params, kwargs, out, num_classes=num_classes,
                     image_size=config.input.image_size, global_pool=global_pool)
  print(f"Exported step {step} of {storage.path(workdir)} ({fmt}) to {storage.path(out)}: "
        f"{sorted(p.name for p in storage.path(out).iterdir())}", flush=True)


def _make_output_dir(out: str):
  try:
    epath.Path(out).mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise errors.UserError(f"--out: cannot create the directory {out!r} ({e.strerror}): "
                           "choose a writable location") from e
