"""mimjax: masked image modeling (MAE, LUT) in JAX. `mimjax.load_pretrained(path)` loads a model."""
__version__ = "0.1.0"


def __getattr__(name):
  # Imported on first use: importing jax sets TF_CPP_MIN_LOG_LEVEL=1 unless it is set, which
  # would come before each CLI's own default (2, which keeps TensorFlow's warnings off stderr).
  if name == "load_pretrained":
    from mimjax.api import load_pretrained  # pylint: disable=g-import-not-at-top
    return load_pretrained
  raise AttributeError(f"module 'mimjax' has no attribute {name!r}")
