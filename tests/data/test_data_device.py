"""Global jax.Arrays from the host batches, and on-device normalization."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from mimjax import data
from mimjax import methods

from tests.helpers import data_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_normalize_matches_imagenet_formula():
  images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
  out = jax.jit(data.normalize)(images)
  assert out.dtype == jnp.float32
  expected = (images / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(data.denormalize(out), images / 255.0, atol=1e-5)
  assert data.MEAN_RGB == (0.485, 0.456, 0.406) and data.STD_RGB == (0.229, 0.224, 0.225)


def test_train_iterator_gives_sharded_uint8_arrays(image_folder):
  cfg = data_config(dataset='folder', folder=image_folder)
  mesh = Mesh(np.array(jax.devices()).reshape(-1, 1), ('data', 'fsdp'))
  it = data.make_train_iterator(cfg, methods.get('lut'), seed=5, start_step=1, mesh=mesh)
  batch = next(it)
  host = next(data.make_host_iterator(cfg, methods.get('lut'), 5, 1, process_index=0,
                                      process_count=1))
  assert set(batch) == {'view1', 'view2'}
  for k in batch:
    assert isinstance(batch[k], jax.Array) and batch[k].dtype == jnp.uint8
    assert batch[k].shape == (8, 32, 32, 3)
    assert isinstance(batch[k].sharding, NamedSharding)
    np.testing.assert_array_equal(np.asarray(batch[k]), host[k])
  assert it.num_corrupt == 0
  ev = data.make_eval_iterator(cfg, mesh=mesh)
  batches = list(ev)
  assert len(batches) == ev.num_batches == 3
  assert set(batches[0]) == {'image', 'label', 'mask'}


_MULTI_DEVICE = textwrap.dedent('''
    import os, sys
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    from jax.sharding import Mesh
    from mimjax import data, methods
    from tests.helpers import data_config
    cfg = data_config(dataset='folder', folder={folder!r})
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ('data', 'fsdp'))
    it = data.make_train_iterator(cfg, methods.get('mae'), seed=0, start_step=2, mesh=mesh)
    host = data.make_host_iterator(cfg, methods.get('mae'), 0, 2, process_index=0,
                                   process_count=1)
    for _ in range(2):
      batch, expected = next(it)['image'], next(host)['image']
      np.testing.assert_array_equal(np.asarray(batch), expected)
      assert sorted(s.data.shape[0] for s in batch.addressable_shards) == [2, 2, 2, 2]
    try:
      data.validate_config(data_config(dataset='folder', folder={folder!r}, batch_size=6),
                           True, num_processes=1, num_devices=4)
      raise SystemExit('no error for batch 6 on 4 devices')
    except data.DataConfigError:
      pass
    print('MULTI-DEVICE OK')
''')


def test_global_batches_on_a_4_device_mesh(image_folder):
  """4 CPU devices need their own process (XLA flags are read once, at JAX start-up)."""
  script = _MULTI_DEVICE.format(root=ROOT, folder=image_folder)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                       timeout=120, env=env, check=False)
  assert 'MULTI-DEVICE OK' in out.stdout, out.stdout + out.stderr
