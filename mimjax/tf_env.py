"""The process environment of mimjax's commands: each imports this before TensorFlow or jax.

TensorFlow is only the input pipeline here (tf.data, tfds), so its start-up messages are noise on
the console. Unless already set:
- TF_CPP_MIN_LOG_LEVEL=2 keeps its info and warnings off stderr (jax, once imported, sets 1);
- TF_ENABLE_ONEDNN_OPTS=0: on CPUs where TensorFlow turns its oneDNN graph rewrites on by
  default (seen on an AMD EPYC with AVX-512 bf16) it announces them on stderr in every process,
  whatever the log level. The rewrites are for matmuls and convolutions, which the input
  pipeline never runs.
- JAX_PLATFORMS=cpu on a machine with no TPU and no GPU: with libtpu installed (the `tpu` extra,
  for mimjax-compile) JAX would otherwise start the TPU runtime to look for chips, and libtpu
  prints its failed probe of the TPU metadata on stderr. Where a TPU or GPU is visible, or
  JAX_PLATFORMS or JAX_FORCE_TPU_INIT is set, JAX chooses as usual.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def _cpu_only_machine() -> bool:
  # JAX's own checks (PCI vendor ids): cheap, and they load no runtime.
  from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
  return (hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0
          and not hardware_utils.has_visible_nvidia_gpu()
          and hardware_utils.num_available_amd_gpus(stop_at=1) == 0)


if not os.environ.get("JAX_PLATFORMS") and "JAX_FORCE_TPU_INIT" not in os.environ:
  if _cpu_only_machine():
    import jax  # pylint: disable=g-import-not-at-top
    os.environ["JAX_PLATFORMS"] = "cpu"  # the trainers this process starts inherit it
    jax.config.update("jax_platforms", "cpu")
