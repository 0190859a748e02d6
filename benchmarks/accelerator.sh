#!/usr/bin/env bash
# The README's accelerator figures in one run, on one GPU (or TPU) host, from a checkout:
#
#   benchmarks/accelerator.sh OUT_DIR [BATCH]
#
# MAE B/16 in bfloat16 at BATCH images (default 256) with the default attention, with XLA's own
# attention and against the PyTorch reference (Hugging Face ViTMAEForPreTraining, torch.compile,
# fused AdamW), then LUT B/16; a jax.profiler trace of the MAE steps goes to OUT_DIR/profile.tgz.
# Each run's output is kept in OUT_DIR/*.txt; STEPS and WARMUP (20, 3) set the steps timed.
# Needs jax, flax, optax, ml_collections and absl (torch and transformers for the reference); no
# TensorFlow, no dataset, no network.
set -uo pipefail
out=${1:?usage: benchmarks/accelerator.sh OUT_DIR [BATCH]}
batch=${2:-256}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  "$python" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, jax.devices())"; } | tee "$out/device.txt"

bench() {  # NAME CONFIG ARGS...: one benchmark run, its output kept; a failure stops nothing
  local name=$1 config=$2
  shift 2
  echo "== $name: $config $*"
  "$python" benchmarks/train_step.py --config="$config" --config.model.dtype=bfloat16 \
      --config.input.batch_size="$batch" --steps="${STEPS:-20}" --warmup="${WARMUP:-3}" "$@" \
      2>&1 | tee "$out/$name.txt"
}

bench mae_b16 configs/mae.py:variant=B/16 --profile_dir="$out/profile"
bench mae_b16_xla_attention configs/mae.py:variant=B/16 --config.model.attention_impl=xla \
    --torch=False
# One micro-batch: the recipe's four exist to fit 4096 images, not 256.
bench lut_b16 configs/lut.py:variant=B/16 --config.optim.accum_steps=1 --torch=False
# One file to carry off the host (TensorBoard's profile plugin or Perfetto opens the trace inside).
tar -czf "$out/profile.tgz" -C "$out" profile && rm -r "$out/profile"
grep -h "mimjax \|PyTorch \|ratio" "$out"/*.txt
