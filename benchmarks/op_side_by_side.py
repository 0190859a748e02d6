r"""The train step's own ops, XLA against PyTorch on the same shapes, in one run.

  python benchmarks/op_side_by_side.py [--variant B/16] [--batch_size 8] [--repeats 10]

What is left of a step's time once the model code is right is the compilers' kernels. This
times, for MAE's encoder (the 25% of patches kept, plus cls) and its 512-wide decoder (every
patch plus cls), on float32:
  - each dense layer's three matmuls: forward (x W), the input's gradient (dy W^T) and the
    weight's gradient (x^T dy), as jit-compiled jnp.einsum and as torch.matmul;
  - the attention core (q k^T, softmax, times v) forward and backward, as mimjax computes it
    (mimjax.models.vit.attend) and as torch's scaled_dot_product_attention.
Each figure is the best of three rounds of --repeats calls, in GFLOP/s (matmuls) or ms.
benchmarks/top_ops.py gives a profile's by-op table to set these against. Not a test.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import torch

from configs import mae as mae_recipe
from mimjax.models import vit


def best_seconds(fn, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    for _ in range(repeats):
      fn()
    best = min(best, (time.perf_counter() - start) / repeats)
  return best


def jax_call(fn, *args):
  compiled = jax.jit(fn)
  return lambda: jax.block_until_ready(compiled(*args))


def matmul_rows(name, tokens, width, out, repeats):
  """(label, XLA GFLOP/s, torch GFLOP/s) for forward, input gradient and weight gradient."""
  keys = jax.random.split(jax.random.key(0), 3)
  x, w, dy = (jax.random.normal(keys[0], (tokens, width)), jax.random.normal(keys[1], (width, out)),
              jax.random.normal(keys[2], (tokens, out)))
  tx, tw, tdy = (torch.from_numpy(jax.device_get(a).copy()) for a in (x, w, dy))
  flops = 2 * tokens * width * out
  cases = [
      ("x W", jax_call(lambda a, b: a @ b, x, w), lambda: tx @ tw),
      ("dy W^T", jax_call(lambda a, b: jnp.einsum("mn,kn->mk", a, b), dy, w), lambda: tdy @ tw.T),
      ("x^T dy", jax_call(lambda a, b: jnp.einsum("mk,mn->kn", a, b), x, dy), lambda: tx.T @ tdy),
  ]
  for what, xla_fn, torch_fn in cases:
    yield (f"{name} {tokens}x{width}x{out} {what}", flops / best_seconds(xla_fn, repeats) / 1e9,
           flops / best_seconds(torch_fn, repeats) / 1e9)


def attention_row(name, batch, length, width, heads, repeats):
  """(label, XLA ms, torch ms) of the attention core's forward and backward."""
  shape = (batch, heads, length, width // heads)
  q, k, v = (jax.random.normal(key, shape) for key in jax.random.split(jax.random.key(1), 3))
  grad = jax.grad(lambda q, k, v: jnp.sum(jnp.sin(vit.attend(q, k, v))), (0, 1, 2))
  tq, tk, tv = (torch.from_numpy(jax.device_get(a).copy()).requires_grad_() for a in (q, k, v))

  def torch_step():
    torch.nn.functional.scaled_dot_product_attention(tq, tk, tv).sin().sum().backward()

  return (f"{name} attention {batch}x{heads} heads x {length} tokens x {width // heads}, fwd+bwd",
          best_seconds(jax_call(grad, q, k, v), repeats) * 1e3,
          best_seconds(torch_step, repeats) * 1e3)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--variant", default="B/16")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  for name, value in (("--batch_size", args.batch_size), ("--repeats", args.repeats)):
    if value < 1:
      parser.error(f"{name} must be at least 1")
  try:
    spec = vit.decode_variant(args.variant)
  except ValueError as e:
    parser.error(str(e))
  recipe = mae_recipe.get_config().model  # the decoder and mask ratio MAE trains with
  patches = (args.image_size // spec.patch) ** 2
  kept = 1 + int(patches * (1 - recipe.mask_ratio))  # cls + the patches the mask keeps
  print(f"MAE {args.variant} {args.image_size}px, batch {args.batch_size}, float32, "
        f"jax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
  print(f"{'op':58s} {'XLA':>8s} {'torch':>8s} {'XLA/torch':>9s}")
  encoder = (args.batch_size * kept, spec.width)
  decoder = (args.batch_size * (1 + patches), recipe.decoder_width)
  for name, (tokens, width) in (("encoder", encoder), ("decoder", decoder)):
    for out, layer in ((3 * width, "qkv"), (4 * width, "fc1")):
      for label, xla, ref in matmul_rows(f"{name} {layer}", tokens, width, out, args.repeats):
        print(f"{label:58s} {xla:6.0f} GF/s {ref:4.0f} GF/s {xla / ref:6.2f}x")
  for name, length, width, heads in (("encoder", kept, spec.width, spec.heads),
                                     ("decoder", 1 + patches, recipe.decoder_width,
                                      recipe.decoder_heads)):
    label, xla, ref = attention_row(name, args.batch_size, length, width, heads, args.repeats)
    print(f"{label:58s} {xla:6.1f} ms   {ref:4.1f} ms   {ref / xla:6.2f}x")


if __name__ == "__main__":
  main()
