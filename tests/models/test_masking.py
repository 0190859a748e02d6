"""Masking against a direct NumPy transcription of the MAE reference algorithm."""
import jax
import numpy as np
import pytest

from mimjax.models import masking


def reference_masking(noise, mask_ratio, start_view=0):
  n, length = noise.shape
  len_keep = int(length * (1 - mask_ratio))
  ids_shuffle = np.argsort(noise, axis=1, kind="stable")
  ids_restore = np.argsort(ids_shuffle, axis=1, kind="stable")
  lo, hi = start_view * len_keep, (start_view + 1) * len_keep
  mask = np.ones((n, length))
  mask[:, lo:hi] = 0
  mask = np.take_along_axis(mask, ids_restore, axis=1)
  return ids_shuffle[:, lo:hi], mask, ids_restore


@pytest.mark.parametrize("length,ratio", [(196, 0.75), (16, 0.75), (49, 0.6)])
def test_random_masking_matches_reference(length, ratio):
  noise = np.random.default_rng(0).random((4, length), dtype=np.float32)
  got = masking.random_masking(noise, ratio)
  keep, mask, restore = reference_masking(noise, ratio)
  np.testing.assert_array_equal(got.ids_keep, keep)
  np.testing.assert_array_equal(got.mask, mask)
  np.testing.assert_array_equal(got.ids_restore, restore)
  assert got.ids_keep.shape == (4, int(length * (1 - ratio)))
  # The kept patches are the lowest-noise ones.
  kept_noise = np.take_along_axis(noise, np.asarray(got.ids_keep), axis=1)
  removed_noise = np.where(np.asarray(got.mask) == 1, noise, np.inf)
  assert (kept_noise.max(axis=1) < removed_noise.min(axis=1)).all()


def test_two_views_are_disjoint_and_keep_len_keep():
  noise = np.asarray(masking.sample_noise(jax.random.key(3), 8, 196))
  view1, view2 = masking.two_view_masking(noise, 0.75)
  keep1, mask1, _ = reference_masking(noise, 0.75, 0)
  keep2, mask2, _ = reference_masking(noise, 0.75, 1)
  np.testing.assert_array_equal(view1.ids_keep, keep1)
  np.testing.assert_array_equal(view2.ids_keep, keep2)
  np.testing.assert_array_equal(view1.mask, mask1)
  np.testing.assert_array_equal(view2.mask, mask2)
  visible1, visible2 = 1 - np.asarray(view1.mask), 1 - np.asarray(view2.mask)
  assert (visible1.sum(1) == 49).all() and (visible2.sum(1) == 49).all()
  assert (visible1 * visible2).sum() == 0
  for row in range(8):
    assert not set(np.asarray(view1.ids_keep[row])) & set(np.asarray(view2.ids_keep[row]))


def test_two_views_need_half_masked():
  with pytest.raises(ValueError, match="mask_ratio >= 0.5"):
    masking.two_view_masking(np.zeros((1, 16), np.float32), 0.4)
