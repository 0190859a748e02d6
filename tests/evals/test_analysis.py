"""The analyses against inputs with known answers, and the encoder's recorded internals."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial import distance as scipy_distance

from mimjax.evals import analysis_measures as measures
from mimjax.models import vit

GRID, PATCH = (4, 5), 8


def _attention(matrix, n=2, heads=3):
  return np.broadcast_to(matrix, (n, heads) + matrix.shape)


def test_identity_attention_has_distance_zero_and_entropy_zero():
  t = 1 + GRID[0] * GRID[1]
  attn = _attention(np.eye(t))
  np.testing.assert_allclose(measures.mean_attention_distance(attn, GRID, PATCH), 0.0)
  np.testing.assert_allclose(measures.attention_entropy(attn), 0.0, atol=1e-12)


def test_uniform_attention_gives_the_mean_pairwise_patch_distance():
  num_prefix = 3  # cls and two registers: excluded, the patch weights renormalized
  t = num_prefix + GRID[0] * GRID[1]
  attn = _attention(np.full((t, t), 1.0 / t))
  centres = [((r + 0.5) * PATCH, (c + 0.5) * PATCH)
             for r, c in itertools.product(range(GRID[0]), range(GRID[1]))]
  expected = scipy_distance.cdist(centres, centres).mean()  # every ordered pair, self included
  got = measures.mean_attention_distance(attn, GRID, PATCH, num_prefix)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  np.testing.assert_allclose(measures.attention_entropy(attn, num_prefix), np.log(t), rtol=1e-12)


def test_attention_to_the_right_neighbour_is_one_patch_away():
  length = GRID[0] * GRID[1]
  attn = np.zeros((1 + length, 1 + length))
  attn[0, 0] = 1
  for q in range(length):
    r, c = divmod(q, GRID[1])
    attn[1 + q, 1 + r * GRID[1] + (c + 1) % GRID[1]] = 1  # wraps around at the row's end
  wrap = (GRID[1] - 1) * PATCH
  expected = (GRID[0] * (GRID[1] - 1) * PATCH + GRID[0] * wrap) / length
  np.testing.assert_allclose(measures.mean_attention_distance(_attention(attn), GRID, PATCH),
                             expected)


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_rank_r_features_have_r_nonzero_singular_values(rank):
  rng = np.random.default_rng(rank)
  features = rng.normal(size=(50, rank)) @ rng.normal(size=(rank, 16)) + rng.normal(size=16)
  spectrum = measures.singular_spectrum(features)
  assert spectrum[0] == pytest.approx(1.0) and np.all(np.diff(spectrum) <= 1e-12)
  assert measures.numerical_rank(spectrum) == rank
  assert 1.0 <= measures.effective_rank(spectrum) <= rank + 1e-9


def test_effective_rank_of_a_flat_spectrum_is_its_length():
  assert measures.effective_rank(np.ones(5)) == pytest.approx(5.0)
  assert measures.effective_rank(np.array([1.0, 0, 0])) == pytest.approx(1.0)


def test_token_norm_stats_find_a_planted_outlier():
  tokens = np.ones((2, 1 + 2 + 10, 4))  # norm 2 everywhere
  tokens[1, 5] *= 10
  stats = measures.token_norm_stats(tokens, num_registers=2)
  assert stats["patch_median"] == pytest.approx(2.0) and stats["patch_max"] == pytest.approx(20.0)
  assert stats["patch_outlier_fraction"] == pytest.approx(1 / 20)
  assert stats["registers"] == pytest.approx(2.0) and stats["cls"] == pytest.approx(2.0)


@pytest.mark.parametrize("num_registers", [0, 2])
def test_encoder_records_attention_only_when_asked_and_drops_registers(num_registers):
  encoder = vit.Encoder("mu/4", num_registers=num_registers)
  images = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  params = encoder.init(jax.random.key(1), images)["params"]
  assert ("registers" in params) == bool(num_registers)
  plain = jax.jit(encoder.apply)({"params": params}, images)
  assert plain.shape == (2, 1 + 16, 32)  # registers never leave the encoder
  class Wrapper:  # encoder_internals calls model.apply(..., method="encode")
    def apply(self, variables, x, method, mutable):
      del method
      out, state = encoder.apply(variables, x, mutable=mutable)
      return out, {"intermediates": {"encoder": state["intermediates"]}}
  internals = jax.jit(lambda p, x: measures.encoder_internals(Wrapper(), p, x))(params, images)
  np.testing.assert_allclose(internals.output, plain, rtol=1e-5, atol=1e-5)  # same numbers
  tokens = 1 + num_registers + 16
  assert len(internals.attention) == 2 and internals.attention[0].shape == (2, 2, tokens, tokens)
  np.testing.assert_allclose(jnp.sum(internals.attention[1], -1), 1.0, rtol=1e-5)
  assert internals.tokens[0].shape == (2, tokens, 32)
