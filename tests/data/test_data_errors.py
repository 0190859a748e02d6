"""Each bad config is one clear DataConfigError before anything runs; corrupt images."""
import os
import shutil

import numpy as np
import pytest

from mimjax import data
from mimjax import methods

from tests.helpers import data_config, take, write_folder


def host(cfg, method='mae', start=0, count=1, **kw):
  return data.make_host_iterator(cfg, methods.get(method), 0, start, process_index=0,
                                 process_count=count,
                                 **kw)


def test_empty_folder(tmp_path):
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'notes.txt').write_text('not an image')
  cfg = data_config(dataset='folder', folder=str(tmp_path))
  with pytest.raises(data.DataConfigError, match='holds no images'):
    data.validate_config(cfg, True, 1, 1)
  with pytest.raises(data.DataConfigError, match='holds no images'):
    host(cfg)


def test_missing_folder_and_missing_key(tmp_path):
  with pytest.raises(data.DataConfigError, match='does not exist'):
    data.validate_config(data_config(dataset='folder', folder=str(tmp_path / 'nope')), True)
  with pytest.raises(data.DataConfigError, match='config.folder'):
    data.validate_config(data_config(dataset='folder', folder=''), True)


def test_missing_split(image_folder, tfds_data_dir):
  cfg = data_config(dataset='folder', folder=image_folder, split='validation')
  with pytest.raises(data.DataConfigError, match="Split 'validation' not found"):
    data.validate_config(cfg, True)
  cfg = data_config(dataset='mimjax_test_photos', data_dir=tfds_data_dir, split='validation')
  with pytest.raises(data.DataConfigError, match="Split 'validation' not found.*'train'"):
    data.validate_config(cfg, True)
  with pytest.raises(data.DataConfigError, match='not a split name'):
    data.validate_config(data_config(split='train[::2]'), True)


def test_imagenet_layout_val_folder_is_the_validation_split(tmp_path):
  root = tmp_path / 'imagenet_style'
  write_folder(str(root / 'train'), np.random.default_rng(0), num_classes=2, per_class=4)
  write_folder(str(root / 'val'), np.random.default_rng(1), num_classes=2, per_class=2)
  for split in ('validation', 'val'):  # the evaluators' default name finds val/
    source = data.sources.get_source(data_config(dataset='folder', folder=str(root)), split)
    assert source.num_examples == 4
    assert all(os.sep + 'val' + os.sep in p for p in source.paths)
  assert data.sources.get_source(data_config(dataset='folder', folder=str(root)),
                                 'train').num_examples == 8
  with pytest.raises(data.DataConfigError,
                     match=r"Split 'test' not found.*subfolders: \['train', 'val'\]"):
    data.sources.get_source(data_config(dataset='folder', folder=str(root)), 'test')


def test_unprepared_tfds_dataset_is_never_downloaded(tmp_path, no_network):
  empty = tmp_path / 'tfds'
  empty.mkdir()
  for name in ('imagenette', 'imagenet2012'):
    cfg = data_config(dataset=name, data_dir=str(empty))
    with pytest.raises(data.DataConfigError, match=f'not prepared.*tfds build {name}'):
      data.validate_config(cfg, True, 1, 1)
    with pytest.raises(data.DataConfigError, match='not prepared'):
      host(cfg)
  assert not any(p.is_file() for p in empty.rglob('*'))  # nothing was fetched or written


def test_unknown_dataset(tmp_path, no_network):
  cfg = data_config(dataset='no_such_dataset_xyz', data_dir=str(tmp_path))
  with pytest.raises(data.DataConfigError, match='neither a tfds dataset'):
    data.validate_config(cfg, True)


def test_batch_not_divisible(image_folder):
  cfg = data_config(dataset='folder', folder=image_folder, batch_size=10)
  with pytest.raises(data.DataConfigError, match='divisible by the process count 4'):
    data.validate_config(cfg, True, num_processes=4, num_devices=1)
  with pytest.raises(data.DataConfigError, match='divisible by the device count 4'):
    data.validate_config(cfg, True, num_processes=1, num_devices=4)
  with pytest.raises(data.DataConfigError, match='divisible by the process count 3'):
    host(cfg, count=3)
  data.validate_config(cfg, True, num_processes=2, num_devices=5)  # fine


def test_other_bad_values(image_folder):
  base = dict(dataset='folder', folder=image_folder)
  cases = [
      (dict(batch_size=32), 'larger than one epoch'),
      (dict(batch_size=0), 'batch_size must be a positive int'),
      (dict(on_corrupt='ignore'), 'on_corrupt must be one of'),
      (dict(image_size=4), 'image_size must be an int >= 8'),
      (dict(eval_crop_fraction=1.5), 'eval_crop_fraction'),
  ]
  for overrides, message in cases:
    with pytest.raises(data.DataConfigError, match=message):
      data.validate_config(data_config(**base, **overrides), True)
  assert issubclass(data.DataConfigError, ValueError)


@pytest.fixture(scope='module')
def corrupt_folder(image_folder, tmp_path_factory):
  """The test folder plus two bad files: a truncated JPEG and a text file named .png."""
  root = str(tmp_path_factory.mktemp('corrupt') / 'images')
  shutil.copytree(image_folder, root)
  with open(os.path.join(image_folder, 'class_0', 'img_0.jpg'), 'rb') as f:
    jpeg = f.read()
  with open(os.path.join(root, 'class_1', 'truncated.jpg'), 'wb') as f:
    f.write(jpeg[:40])
  with open(os.path.join(root, 'class_2', 'text.png'), 'w') as f:
    f.write('hello')
  return root  # 26 files: batch 13 -> 2 steps per epoch


def test_corrupt_fail_names_the_file(corrupt_folder):
  cfg = data_config(dataset='folder', folder=corrupt_folder, batch_size=13, on_corrupt='fail')
  with pytest.raises(data.CorruptImageError, match=r'(truncated\.jpg|text\.png)'):
    take(host(cfg), 2)


def test_corrupt_skip_counts_and_stays_resumable(corrupt_folder):
  cfg = data_config(dataset='folder', folder=corrupt_folder, batch_size=13, on_corrupt='skip')
  it = host(cfg, with_ids=True)
  run = take(it, 4)  # two epochs
  # Each epoch meets both bad files at their own positions (more if one substitutes the other).
  assert it.num_corrupt >= 4
  for b in run:
    assert b['image'].shape == (13, 32, 32, 3)
    assert not any(n.endswith((b'truncated.jpg', b'text.png')) for n in b['name'])
  resumed = take(host(cfg, start=3, with_ids=True), 1)[0]
  np.testing.assert_array_equal(resumed['image'], run[3]['image'])
  np.testing.assert_array_equal(resumed['name'], run[3]['name'])
  # The eval pass drops them; every other image is seen once.
  ev = data.make_host_eval_iterator(cfg, process_count=1, with_ids=True)
  names = np.concatenate([b['name'][b['mask']] for b in ev])
  assert ev.num_corrupt == 2 and len(names) == 24  # the bad rows are masked out


def test_corrupt_tfds_record(tfds_data_dir):
  cfg = data_config(dataset='mimjax_test_photos', data_dir=tfds_data_dir, split='corrupt',
                    batch_size=4, shuffle_buffer=4)
  with pytest.raises(data.CorruptImageError, match='mimjax_test_photos-corrupt.tfrecord'):
    take(host(cfg), 3)  # one epoch: 12 records
  cfg.on_corrupt = 'skip'
  it = host(cfg)
  run = take(it, 3)
  assert it.num_corrupt >= 1
  resumed = take(host(cfg, start=2), 1)[0]
  np.testing.assert_array_equal(resumed['image'], run[2]['image'])


def test_stream_substitutes_are_neighbours():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from mimjax.data.sources import with_neighbours  # pylint: disable=g-import-not-at-top
  names = [b'a', b'b', b'c', b'd', b'e', b'f']
  ds = tf.data.Dataset.from_tensor_slices(
      dict(data=names, name=names, label=tf.range(6, dtype=tf.int32)))
  out = [el['name'].tolist() for el in with_neighbours(ds, 2).as_numpy_iterator()]
  assert out[0] == [b'a', b'b', b'c', b'', b'']
  assert out[2] == [b'c', b'd', b'e', b'b', b'a']
  assert out[5] == [b'f', b'e', b'd', b'', b'']
  assert len(out) == 6
