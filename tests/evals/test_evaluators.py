"""kNN and the linear probe against scikit-learn; evaluator configs; register tokens."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from mimjax import config_lib
from mimjax import evals
from mimjax import sharding
from mimjax import state as state_lib
from mimjax.evals import features as features_lib
from mimjax.evals import knn
from mimjax.evals import linear_probe
from mimjax.export import rules
from mimjax.export import common
from mimjax.models import masking
from tests import helpers


def _blobs(n_train, n_val, dim, classes, spread, seed):
  """(train_x, train_y, val_x, val_y): Gaussian classes around shared random centres."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(classes, dim))
  labels = rng.integers(0, classes, n_train + n_val)
  x = (centres[labels] + spread * rng.normal(size=(len(labels), dim))).astype(np.float32)
  return x[:n_train], labels[:n_train], x[n_train:], labels[n_train:]


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_knn_votes_equal_scikit_learn_weighted_knn():
  train_x, train_y, val_x, val_y = _blobs(300, 100, 12, 6, 1.0, 0)
  k, t = 20, 0.07
  ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                             weights=lambda d: np.exp((1 - d) / t)).fit(train_x, train_y)
  votes = np.asarray(knn.knn_votes(jnp.asarray(_unit(train_x)), jnp.asarray(train_y),
                                   jnp.asarray(_unit(val_x)), k, t, 6), np.float64)
  np.testing.assert_allclose(votes / votes.sum(1, keepdims=True), ref.predict_proba(val_x),
                             atol=1e-4)
  proba = ref.predict_proba(val_x)
  top1, top5 = knn.topk_correct(jnp.asarray(votes), jnp.asarray(val_y))
  assert int(top1) == np.sum(proba.argmax(1) == val_y)
  assert int(top5) == np.sum(np.any(np.argsort(-proba, 1, kind="stable")[:, :5] == val_y[:, None], 1))
  assert 0.5 < int(top1) / 100 < 1  # a problem with something to get wrong


def test_padding_rows_of_the_bank_never_vote():
  bank = jnp.asarray(_unit(np.eye(3, dtype=np.float32)))
  votes = knn.knn_votes(bank, jnp.asarray([0, 1, -1]), bank[2:], 20, 0.07, 2)
  assert np.all(np.isfinite(votes)) and votes.shape == (1, 2)
  np.testing.assert_allclose(votes, [[1.0, 1.0]])  # cos 0 to both real rows: exp(0) each


def test_linear_probe_matches_scikit_learn_logistic_regression():
  train_x, train_y, val_x, val_y = _blobs(800, 400, 16, 5, 2.0, 2)
  train_y[:7] = -1  # padding rows are ignored
  ours = linear_probe.train_probe(train_x, train_y, val_x, val_y, 5, epochs=30, warmup_epochs=3,
                                  base_lr=40.0, batch_size=128)
  keep = train_y >= 0
  scaler = StandardScaler().fit(train_x[keep])
  ref = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x[keep]), train_y[keep])
  ref_top1 = ref.score(scaler.transform(val_x), val_y)
  assert 0.6 < ref_top1 < 0.99
  assert abs(ours["top1"] - ref_top1) <= 0.03, (ours, ref_top1)
  assert ours["top5"] >= ours["top1"]


def test_linear_probe_whose_warm_up_is_every_epoch_trains():
  # warmup_epochs == epochs is a valid config (warm-up, no cosine); it used to crash in optax.
  train_x, train_y, val_x, val_y = _blobs(800, 200, 8, 3, 0.3, 0)
  result = linear_probe.train_probe(train_x, train_y, val_x, val_y, 3, epochs=30, warmup_epochs=30,
                                    base_lr=40.0, batch_size=128)
  assert result["top1"] > 0.8, result


def test_probe_head_is_batchnorm_without_affine_and_lars_skips_biases():
  head = linear_probe.ProbeHead(3)
  variables = head.init(jax.random.key(0), jnp.zeros((2, 4)), train=False)
  assert set(variables["params"]) == {"head"}  # the BatchNorm has no scale or bias
  assert float(jnp.std(variables["params"]["head"]["kernel"])) < 0.02
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  grads = {"w": jnp.full((2, 2), 5.0), "b": jnp.full(2, 5.0)}
  updates, _ = linear_probe.lars(1.0).update(grads, linear_probe.lars(1.0).init(params), params)
  # The matrix step is trust-scaled to 0.001 of its norm; the bias step is the plain gradient.
  np.testing.assert_allclose(jnp.linalg.norm(updates["w"]), 0.001 * jnp.linalg.norm(params["w"]),
                             rtol=1e-5)
  np.testing.assert_allclose(updates["b"], -5.0)


@pytest.fixture(scope="module")
def tiny_model():
  config = helpers.tiny_config("mae")
  model = state_lib.build_model(config)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 16, 16, 3)),
                      masking.sample_noise(jax.random.key(0), 2, 16))["params"]
  return config, model, params


def test_knn_evaluator_equals_scikit_learn_on_the_same_features(tiny_model):
  config, model, params = tiny_model
  mesh = sharding.make_mesh(-1, 1)
  e = evals.make_config("knn", train_split="train[:75%]", val_split="train[75%:]", batch_size=16)
  result = evals.get("knn")(config, e, model, mesh).run(params)
  cfg = features_lib.input_config(config, e)
  extract = features_lib.Extractor(model, mesh, "cls", normalize=True)
  (tx, ty), (vx, vy) = [map(np.asarray, extract(params, cfg, s)) for s in (e.train_split,
                                                                           e.val_split)]
  tx, ty, vx, vy = tx[ty >= 0], ty[ty >= 0], vx[vy >= 0], vy[vy >= 0]
  assert len(ty) == 120 and len(vy) == 40  # 160 photos, padding dropped
  ref = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute",
                             weights=lambda d: np.exp((1 - d) / 0.07)).fit(tx, ty)
  assert result["top1"] == pytest.approx(ref.score(vx, vy))


def test_reconstruction_evaluator_masks_are_fixed(tiny_model):
  config, model, params = tiny_model
  mesh = sharding.make_mesh(-1, 1)
  e = evals.make_config("reconstruction", split="train[75%:]", batch_size=16)
  ev = evals.get("reconstruction")(config, e, model, mesh)
  first, second = ev.run(params), ev.run(params)
  assert first == second and 0.3 < first["loss"] < 5
  other = evals.get("reconstruction")(config, evals.make_config(
      "reconstruction", split="train[75%:]", batch_size=16, seed=1), model, mesh).run(params)
  assert other["loss"] != first["loss"]  # another seed, other masks


@pytest.mark.parametrize("key,value,message", [
    ("type", "knnn", "config.evals.knn.type: 'knnn' is not one of"),
    ("val_split", "nosuch", "config.evals.knn.val_split: 'nosuch'"),
    ("k", 0, "config.evals.knn.k"),
    ("every_steps", -2, "config.evals.knn.every_steps"),
    ("batch_size", 3, "config.evals.knn.batch_size: 3 is not divisible"),
])
def test_bad_evaluator_config_is_one_message_naming_the_key(key, value, message):
  c = helpers.tiny_config("mae")
  c.evals.knn[key] = value
  with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(")):
    config_lib.validate(c, 1, 2)


def test_unlabelled_data_is_refused_for_knn(tmp_path):
  from PIL import Image
  for i in range(4):
    Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
  c = helpers.tiny_config("mae")
  c.evals.knn.update(dataset="folder", folder=str(tmp_path), train_split="train",
                     val_split="train")
  with pytest.raises(config_lib.ConfigError, match="config.evals.knn.train_split: .* no labels"):
    config_lib.validate(c, 1, 1)


def test_make_config_rejects_unknown_keys_and_types():
  with pytest.raises(KeyError, match="no key 'kk'"):
    evals.make_config("knn", kk=3)
  with pytest.raises(KeyError, match="unknown evaluator type 'nope'"):
    evals.make_config("nope")
  assert {"knn", "linear_probe", "reconstruction"} <= set(evals.names())


def test_export_refuses_register_tokens():
  with pytest.raises(rules.ConversionError, match="2 register tokens"):
    common.arch_kwargs({"variant": "mu/4", "num_registers": 2})
  assert "num_registers" not in common.arch_kwargs({"variant": "mu/4", "num_registers": 0})
