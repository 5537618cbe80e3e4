"""Shared session fixtures for tests/test_data_*.py: builders prepared once, from scratch, offline."""

import os

import pytest

import jaxformer.data  # noqa: F401  (registers the builders)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A fresh data dir with every shipped builder prepared from scratch (no network)."""
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()
  path = str(tmp_path_factory.mktemp('tfds'))
  for name in ('jaxformer_shakespeare', 'jaxformer_genre', 'jaxformer_numbers/en_de'):
    builder = tfds.builder(name, data_dir=path, file_format='array_record')
    assert not builder.is_prepared()
    builder.download_and_prepare()
    assert builder.is_prepared()
  assert not os.path.exists(os.path.expanduser('~/tensorflow_datasets/jaxformer_genre'))
  return path


def cfg(name, data_dir, **kw):
  return {'name': name, 'data_dir': data_dir, **kw}
