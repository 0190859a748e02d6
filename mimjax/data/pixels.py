"""The on-device normalization: uint8 images in, ImageNet-normalized float32 out (jit-friendly).

Images cross to the devices as uint8 (4x fewer bytes than float32) and are normalized inside the
jitted step. Imports no TensorFlow.
"""
import jax
import jax.numpy as jnp

MEAN_RGB = (0.485, 0.456, 0.406)  # ImageNet, on the 0-1 scale
STD_RGB = (0.229, 0.224, 0.225)


def normalize(images: jax.Array) -> jax.Array:
  """uint8 (..., 3) images -> float32 (x / 255 - mean) / std; jit-friendly."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(MEAN_RGB, jnp.float32)) / jnp.asarray(STD_RGB, jnp.float32)


def denormalize(x: jax.Array) -> jax.Array:
  """The inverse of normalize, on the 0-1 scale (for showing reconstructions)."""
  return x * jnp.asarray(STD_RGB, jnp.float32) + jnp.asarray(MEAN_RGB, jnp.float32)
