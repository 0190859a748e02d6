"""The encoder's fixed pieces against the MAE reference definitions, computed independently here."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mimjax.models import vit


def test_sincos_first_half_is_column_second_half_is_row():
  dim, grid = 16, (3, 5)
  emb = vit.sincos_2d(dim, grid)
  assert emb.shape == (1 + 15, dim)
  np.testing.assert_array_equal(emb[0], 0)
  w = 1.0 / 10000 ** (np.arange(dim // 4) / (dim // 4))
  for token in range(15):
    row, col = divmod(token, grid[1])
    expected = np.concatenate([np.sin(col * w), np.cos(col * w), np.sin(row * w), np.cos(row * w)])
    np.testing.assert_allclose(emb[1 + token], expected, rtol=1e-6, atol=1e-7)


def test_patchify_order_and_inverse():
  images = np.arange(2 * 8 * 12 * 3, dtype=np.float32).reshape(2, 8, 12, 3)
  tokens = vit.patchify(jnp.asarray(images), 4)
  assert tokens.shape == (2, 6, 48)
  # Token 4 is grid row 1, column 1; inside it (row-in-patch, col-in-patch, channel), channel fastest.
  np.testing.assert_array_equal(tokens[1, 4], images[1, 4:8, 4:8, :].reshape(-1))
  np.testing.assert_array_equal(vit.unpatchify(tokens, 4, (2, 3)), images)


@pytest.mark.parametrize("variant,expected", [("B/16", (768, 12, 12, 16)), ("H/14", (1280, 32, 16, 14)),
                                              ("mu/4", (32, 2, 2, 4))])
def test_decode_variant(variant, expected):
  spec = vit.decode_variant(variant)
  assert (spec.width, spec.depth, spec.heads, spec.patch) == expected
  assert spec.mlp_dim == 4 * spec.width


@pytest.mark.parametrize("bad", ["X/16", "B16", "", "B/"])
def test_unknown_variant_names_the_choices(bad):
  with pytest.raises(ValueError, match="unknown ViT variant"):
    vit.decode_variant(bad)


def test_reference_initialization():
  model = vit.Encoder("S/16")
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  width = 384
  qkv = np.asarray(params["transformer"]["block0"]["attn"]["qkv"]["kernel"])
  # xavier-uniform on the fused (D, 3D) matrix: bound sqrt(6 / (D + 3D)), variance bound^2 / 3.
  bound = np.sqrt(6 / (width + 3 * width))
  assert np.abs(qkv).max() <= bound and np.abs(qkv).max() > 0.95 * bound
  np.testing.assert_allclose(qkv.var(), bound ** 2 / 3, rtol=0.02)
  patch = np.asarray(params["patch_embed"]["kernel"])
  bound = np.sqrt(6 / (16 * 16 * 3 + width))  # on the flattened (p*p*C, D) shape
  assert np.abs(patch).max() <= bound and np.abs(patch).max() > 0.95 * bound
  np.testing.assert_allclose(np.asarray(params["cls"]).std(), 0.02, rtol=0.25)
  # PyTorch's default Conv2d bias, kept by the reference: U(+-1/sqrt(fan_in)).
  bias = np.asarray(params["patch_embed"]["bias"])
  bound = 1 / np.sqrt(16 * 16 * 3)
  assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.95 * bound
  np.testing.assert_allclose(bias.var(), bound ** 2 / 3, rtol=0.2)
  np.testing.assert_array_equal(params["transformer"]["block0"]["fc1"]["bias"], 0)
  np.testing.assert_array_equal(params["transformer"]["norm"]["scale"], 1)


def test_encoder_bfloat16_compute_keeps_float32_params():
  model = vit.Encoder("mu/4", dtype=jnp.bfloat16)
  images = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  variables = model.init(jax.random.key(0), images)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
  tokens_bf16 = model.apply(variables, images)
  tokens_f32 = vit.Encoder("mu/4").apply(variables, images)
  assert tokens_bf16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(tokens_bf16, np.float32), tokens_f32, atol=0.1)
  assert not np.allclose(np.asarray(tokens_bf16, np.float32), tokens_f32, atol=1e-5)


def test_patch_embedding_equals_the_strided_conv_with_the_same_parameters():
  """patchify + matmul gives the conv's output and gradients, and initializes the same values."""
  images = jax.random.normal(jax.random.key(1), (2, 32, 48, 3))
  embed = vit.PatchEmbed(width=24, patch=8)
  conv = nn.Conv(24, (8, 8), strides=(8, 8), padding="VALID",
                 kernel_init=nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=3),
                 bias_init=vit.torch_conv_bias_init(8 * 8 * 3))
  params = embed.init(jax.random.key(0), images)["params"]
  conv_params = conv.init(jax.random.key(0), images)["params"]
  for name in ("kernel", "bias"):  # same shapes, same draws: checkpoints and seeds carry over
    np.testing.assert_array_equal(params[name], conv_params[name])

  def loss(module, p, x):
    out = module.apply({"params": p}, x).reshape(2, -1, 24)
    return jnp.sum(jnp.sin(out)), out

  (value, out), grads = jax.value_and_grad(lambda p, x: loss(embed, p, x), (0, 1),
                                           has_aux=True)(params, images)
  (ref_value, ref_out), ref_grads = jax.value_and_grad(lambda p, x: loss(conv, p, x), (0, 1),
                                                       has_aux=True)(params, images)
  assert out.shape == (2, 4 * 6, 24)
  np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
    assert float(jnp.abs(want).max()) > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attend_equals_jax_dot_product_attention(dtype):
  """The heads-major attention with late normalization: jax's reference values and gradients."""
  q, k, v = (jax.random.normal(key, (2, 3, 7, 8), dtype)
             for key in jax.random.split(jax.random.key(0), 3))
  reference = lambda q, k, v: jax.nn.dot_product_attention(
      *(x.transpose(0, 2, 1, 3) for x in (q, k, v)), implementation="xla").transpose(0, 2, 1, 3)
  loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v).astype(jnp.float32)))
  tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
  out, ref = vit.attend(q, k, v), reference(q, k, v)
  assert out.dtype == dtype
  np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                             rtol=tolerance, atol=tolerance)
  grads = jax.grad(loss(vit.attend), (0, 1, 2))(q, k, v)
  ref_grads = jax.grad(loss(reference), (0, 1, 2))(q, k, v)
  for got, want in zip(grads, ref_grads):
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=tolerance, atol=tolerance)
  recorded = []
  vit.attend(q, k, v, recorded.append)
  np.testing.assert_allclose(np.asarray(recorded[0]).sum(-1), 1.0, rtol=1e-5)
