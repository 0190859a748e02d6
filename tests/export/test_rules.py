"""The declarative engine: named transforms invert, and key mismatches fail naming the keys."""
import numpy as np
import pytest

from mimjax.export import rules as R


def _random(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name,shape", [
    ("identity", (3, 4)), ("dense_kernel", (6, 5)), ("conv_kernel", (2, 3, 3, 8)),
    ("split3_kernel", (4, 12)), ("split3_bias", (12,))])
def test_transform_inverts_exactly(name, shape):
  transform = R.TRANSFORMS[name]()
  x = _random(shape)
  ys = transform.forward([x])
  (back,) = transform.inverse(ys)
  np.testing.assert_array_equal(back, x)


def test_transforms_follow_torch_layouts():
  kernel = _random((4, 12))  # (D, 3D), [q | k | v]
  q, k, v = R.TRANSFORMS["split3_kernel"]().forward([kernel])
  np.testing.assert_array_equal(q, kernel[:, :4].T)
  np.testing.assert_array_equal(v, kernel[:, 8:].T)
  conv = _random((2, 2, 3, 5))  # (kh, kw, in, out) -> (out, in, kh, kw)
  (weight,) = R.TRANSFORMS["conv_kernel"]().forward([conv])
  assert weight[4, 2, 1, 0] == conv[1, 0, 2, 4]


def test_sincos_constant_checks_incoming_table():
  transform = R.TRANSFORMS["sincos_table"](width=8, grid=(2, 2))
  (table,) = transform.forward([])
  assert table.shape == (1, 5, 8) and not table[0, 0].any()
  assert transform.inverse([table]) == []
  with pytest.raises(R.ConversionError, match="not the fixed 2D sin-cos table"):
    transform.inverse([table + 0.01])
  with pytest.raises(R.ConversionError, match="shape"):
    transform.inverse([table[:, :3]])


def test_head_constant_is_seeded_trunc_normal():
  make = lambda seed: R.TRANSFORMS["trunc_normal_head"](num_classes=200, width=300, std=2e-5,
                                                        seed=seed).forward([])
  (w, b), (w_again, _), (w_other, _) = make(0), make(0), make(1)
  np.testing.assert_array_equal(w, w_again)
  assert not np.array_equal(w, w_other)
  assert w.shape == (200, 300) and w.dtype == np.float32
  assert abs(w.std() / 2e-5 - 1) < 0.02 and abs(w.mean()) < 1e-6 and not b.any()
  (w,), = [R.TRANSFORMS["trunc_normal_head"](num_classes=100, width=100, std=1.0, seed=0,
                                             low=-0.5, high=0.5).forward([])[:1]]
  assert np.abs(w).max() <= 0.5


TABLE = R.dense("enc/fc", "fc") + [R.rule((), "pos", "sincos_table", width=4, grid=(1, 1))]
PARAMS = {"enc/fc/kernel": _random((3, 2)), "enc/fc/bias": _random((2,)), "other/x": _random((1,))}


def test_engine_round_trip_and_scope():
  state = R.to_torch(TABLE, PARAMS, scope=("enc",))  # 'other' is out of scope: ignored
  assert sorted(state) == ["fc.bias", "fc.weight", "pos"]
  assert state["fc.weight"].shape == (2, 3) and state["fc.weight"].flags.c_contiguous
  back = R.from_torch(TABLE, state)
  assert sorted(back) == ["enc/fc/bias", "enc/fc/kernel"]
  np.testing.assert_array_equal(back["enc/fc/kernel"], PARAMS["enc/fc/kernel"])


def test_engine_reports_missing_and_unexpected_keys():
  params = {"enc/fc/kernel": PARAMS["enc/fc/kernel"], "enc/extra": _random((1,))}
  with pytest.raises(R.ConversionError, match=r"missing \(1\): enc/fc/bias\n.*unexpected \(1\): enc/extra"):
    R.to_torch(TABLE, params, scope=("enc",))
  state = R.to_torch(TABLE, PARAMS, scope=("enc",))
  del state["fc.bias"]
  state["head.weight"] = _random((2,))
  with pytest.raises(R.ConversionError, match=r"missing \(1\): fc.bias\n.*unexpected \(1\): head.weight"):
    R.from_torch(TABLE, state)


def test_engine_checks_shapes():
  with pytest.raises(R.ConversionError, match=r"enc/fc/kernel: got \(3, 2\), expected \(3, 3\)"):
    R.to_torch(TABLE, PARAMS, ("enc",), {"enc/fc/kernel": (3, 3), "enc/fc/bias": (2,)})
  state = R.to_torch(TABLE, PARAMS, scope=("enc",))
  with pytest.raises(R.ConversionError, match="enc/fc/bias: got"):
    R.from_torch(TABLE, state, {"enc/fc/kernel": (3, 2), "enc/fc/bias": (3,)})


def test_table_must_not_name_a_key_twice():
  with pytest.raises(ValueError, match="twice"):
    R.to_torch(TABLE + R.dense("enc/fc", "fc2"), PARAMS, ("enc",))
  with pytest.raises(ValueError, match="unknown transform"):
    R.rule("a", "b", "transpose")
