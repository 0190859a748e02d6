"""Determinism, resumption, process shards and eval passes of the host pipelines."""
import os

import numpy as np
import pytest

from mimjax import data
from mimjax import methods

from tests.helpers import NUM_CLASSES, PER_CLASS, TFDS_TRAIN, data_config, take

N_FOLDER = NUM_CLASSES * PER_CLASS  # 24 images, batch 8: 3 steps per epoch


@pytest.fixture(scope='module')
def folder_cfg(image_folder):
  return data_config(dataset='folder', folder=image_folder)


@pytest.fixture(scope='module')
def tfds_cfg(tfds_data_dir):
  return data_config(dataset='mimjax_test_photos', data_dir=tfds_data_dir, shuffle_buffer=16)


def host(cfg, method='mae', seed=0, start=0, index=0, count=1, **kw):
  return data.make_host_iterator(cfg, methods.get(method), seed, start, process_index=index,
                                 process_count=count, with_ids=True, **kw)


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_folder_batches(folder_cfg):
  b = next(host(folder_cfg))
  assert b['image'].shape == (8, 32, 32, 3) and b['image'].dtype == np.uint8
  assert set(b) == {'image', 'name'}
  b = next(host(folder_cfg, 'lut'))
  assert set(b) == {'view1', 'view2', 'name'}
  assert b['view1'].shape == b['view2'].shape == (8, 32, 32, 3)
  assert data.num_examples(folder_cfg) == N_FOLDER


def test_folder_deterministic_and_resumable(folder_cfg):
  run = take(host(folder_cfg, seed=3), 7)  # crosses two epoch boundaries
  for a, b in zip(run, take(host(folder_cfg, seed=3), 7)):
    assert_batches_equal(a, b)
  for start in (2, 4):  # inside the first epoch; and in the second epoch
    resumed = take(host(folder_cfg, seed=3, start=start), 7 - start)
    for a, b in zip(run[start:], resumed):
      assert_batches_equal(a, b)
  other = next(host(folder_cfg, seed=4))
  assert not np.array_equal(other['name'], run[0]['name'])
  # Each epoch is a new permutation that visits every image once.
  for epoch in (run[0:3], run[3:6]):
    names = np.concatenate([b['name'] for b in epoch])
    assert len(set(names)) == N_FOLDER
  assert not np.array_equal(run[0]['name'], run[3]['name'])


def test_lut_deterministic_and_resumable(folder_cfg):
  run = take(host(folder_cfg, 'lut', seed=3), 5)
  for a, b in zip(run[4:], take(host(folder_cfg, 'lut', seed=3, start=4), 1)):
    assert_batches_equal(a, b)
  for a, b in zip(run[:2], take(host(folder_cfg, 'lut', seed=3), 2)):
    assert_batches_equal(a, b)


def test_resume_does_not_decode_skipped_images(folder_cfg, tmp_path):
  """A copy whose step-0 images are garbage: from step 1 on, nothing fails (never decoded)."""
  first = next(host(folder_cfg))
  root = str(tmp_path / 'copy')
  for dirpath, _, files in os.walk(folder_cfg.folder):
    for f in files:
      src = os.path.join(dirpath, f)
      dst = os.path.join(root, os.path.relpath(src, folder_cfg.folder))
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      corrupt = src.encode() in set(first['name'])
      with open(src, 'rb') as fin, open(dst, 'wb') as fout:
        fout.write(b'\xff\xd8\xff garbage' if corrupt else fin.read())
  cfg = data_config(dataset='folder', folder=root, on_corrupt='fail')
  resumed = take(host(cfg, start=1), 2)
  reference = take(host(folder_cfg), 3)[1:]
  for a, b in zip(reference, resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
  with pytest.raises(data.CorruptImageError):
    next(host(cfg, start=0))


@pytest.mark.parametrize('count', [1, 2, 4])
def test_folder_shards_are_disjoint_cover_and_process_independent(folder_cfg, count):
  steps = 3  # one epoch
  single = take(host(folder_cfg), steps)
  shards = [take(host(folder_cfg, index=i, count=count), steps) for i in range(count)]
  seen = [set(np.concatenate([b['name'] for b in s])) for s in shards]
  for i in range(count):
    assert len(seen[i]) == N_FOLDER // count
    for j in range(i):
      assert not seen[i] & seen[j]
  assert len(set().union(*seen)) == N_FOLDER
  # Folder sources: the global batch does not depend on the process count.
  for step in range(steps):
    glued = np.concatenate([s[step]['image'] for s in shards])
    np.testing.assert_array_equal(glued, single[step]['image'])


def test_drop_remainder_varies_per_epoch(image_folder):
  cfg = data_config(dataset='folder', folder=image_folder, batch_size=10)  # 2 steps, 4 left out
  batches = take(host(cfg), 6)
  per_epoch = [set(np.concatenate([b['name'] for b in batches[e:e + 2]])) for e in (0, 2, 4)]
  assert all(len(s) == 20 for s in per_epoch)
  assert len(set().union(*per_epoch)) > 20


def test_tfds_deterministic_and_resumable(tfds_cfg):
  assert data.num_examples(tfds_cfg) == TFDS_TRAIN
  run = take(host(tfds_cfg, seed=1), 7)  # 5 steps per epoch
  for a, b in zip(run, take(host(tfds_cfg, seed=1), 7)):
    assert_batches_equal(a, b)
  for a, b in zip(run[3:], take(host(tfds_cfg, seed=1, start=3), 4)):
    assert_batches_equal(a, b)
  names = np.concatenate([b['name'] for b in run[:5]])
  assert len(set(names)) == TFDS_TRAIN
  assert not np.array_equal(run[0]['name'], run[5]['name'])  # reshuffled per epoch


@pytest.mark.parametrize('count', [1, 2, 4])
def test_tfds_shards_are_disjoint_and_cover(tfds_cfg, count):
  steps = 5  # one epoch: 40 examples / batch 8
  seen = [set(np.concatenate([b['name'] for b in take(host(tfds_cfg, index=i, count=count), steps)]))
          for i in range(count)]
  for i in range(count):
    assert len(seen[i]) == TFDS_TRAIN // count
    for j in range(i):
      assert not seen[i] & seen[j]
  assert len(set().union(*seen)) == TFDS_TRAIN


def test_offline_photos_pipeline(offline_photos_cache):
  cfg = data_config(cache_dir=offline_photos_cache, batch_size=16)
  assert data.num_examples(cfg) == 160
  b = next(host(cfg, 'lut'))
  assert b['view1'].shape == (16, 32, 32, 3)
  assert all(offline_photos_cache.encode() in n for n in b['name'])


@pytest.mark.parametrize('count', [1, 2])
def test_folder_eval_pass(image_folder, count):
  cfg = data_config(dataset='folder', folder=image_folder, batch_size=10)
  shards = []
  for i in range(count):
    it = data.make_host_eval_iterator(cfg, process_index=i, process_count=count, with_ids=True)
    shards.append(list(it))
    assert it.num_batches == len(shards[-1]) == 3
  glued = [{k: np.concatenate([s[j][k] for s in shards]) for k in shards[0][j]}
           for j in range(3)]
  masks = np.concatenate([b['mask'] for b in glued])
  assert masks.sum() == N_FOLDER and not masks[N_FOLDER:].any()
  names = np.concatenate([b['name'] for b in glued])[masks]
  assert list(names) == sorted(names) and len(set(names)) == N_FOLDER
  labels = np.concatenate([b['label'] for b in glued])[masks]
  expected = [int(n.decode().split('class_')[1][0]) for n in names]
  np.testing.assert_array_equal(labels, expected)
  assert (glued[-1]['image'][~glued[-1]['mask']] == 0).all()  # padding rows are blank
  again = list(data.make_host_eval_iterator(cfg, process_count=1))
  np.testing.assert_array_equal(again[0]['image'], glued[0]['image'])


def test_tfds_eval_pass(tfds_cfg):
  seen = set()
  for i in range(2):
    it = data.make_host_eval_iterator(tfds_cfg, 'test', process_index=i, process_count=2,
                                      with_ids=True)
    batches = list(it)
    assert len(batches) == it.num_batches == 2  # 5 examples per process, 4 per batch
    for b in batches:
      seen.update(b['name'][b['mask']])
      assert set(b['label'][b['mask']]) <= {0, 1, 2}
  assert len(seen) == 10


def test_folder_split_slices(image_folder):
  cfg = data_config(dataset='folder', folder=image_folder)
  train = data.validate_config(cfg, split='train[:75%]')
  held = data.validate_config(cfg, split='train[75%:]')
  assert train.num_examples == 18 and held.num_examples == 6
  assert not set(train.paths) & set(held.paths)
  assert len(set(train.labels)) == NUM_CLASSES
