"""One evaluation of a pre-trained model, outside training (what mimjax-eval runs), free of flags."""
import json

from etils import epath
import jax

from mimjax import api
from mimjax import config_lib
from mimjax import evals
from mimjax import sharding
from mimjax.evals import features


def evaluate(model_path: str, kind: str, out: str = "", **values) -> dict:
  """Loads the model, builds the evaluator from the flags' values, runs it; writes `out`
  (JSON) when given and returns the result."""
  pretrained = api.load_pretrained(model_path)
  config = config_lib.base_config("mae")
  config.input.image_size = values.pop("image_size", 0) or pretrained.image_size or 224
  config.input.batch_size = values.setdefault("batch_size", 64)
  keys = set(evals.make_config(kind))
  eval_config = evals.make_config(kind, **{k: v for k, v in values.items() if k in keys})
  config.evals[kind] = eval_config
  try:
    evals.validate(config, jax.process_count(), jax.device_count())
  except ValueError as e:
    flag = str(e).replace(f"config.evals.{kind}.", "--")
    raise config_lib.ConfigError(flag) from None
  mesh = sharding.make_mesh(-1, 1)
  evaluator = evals.get(kind)(config, eval_config, pretrained.model, mesh)
  result = evaluator.run(features.replicate_params(pretrained.params, mesh))
  result = dict(result, eval=kind, model=pretrained.source, dataset=eval_config.dataset,
                train_split=eval_config.train_split, val_split=eval_config.val_split)
  print(json.dumps(result), flush=True)
  if out:
    path = epath.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
  return result
