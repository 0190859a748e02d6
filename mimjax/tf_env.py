"""TensorFlow's environment for mimjax's commands: each imports this before TensorFlow or jax.

TensorFlow is only the input pipeline here (tf.data, tfds), so its start-up messages are noise on
the console. Unless already set:
- TF_CPP_MIN_LOG_LEVEL=2 keeps its info and warnings off stderr (jax, once imported, sets 1);
- TF_ENABLE_ONEDNN_OPTS=0: on CPUs where TensorFlow turns its oneDNN graph rewrites on by
  default (seen on an AMD EPYC with AVX-512 bf16) it announces them on stderr in every process,
  whatever the log level. The rewrites are for matmuls and convolutions, which the input
  pipeline never runs.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
