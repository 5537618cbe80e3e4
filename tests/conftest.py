"""Test-wide setup: 8 simulated CPU devices (set before jax is first imported), a shared data dir
prepared once under a lock, and a shared XLA compilation cache.

Multi-device code (meshes, sharded heads, pmap) is tested on these host devices, so the same
tests run on any laptop or CI machine. Tests may run in parallel workers (pytest-xdist), so
anything shared is created under a file lock.
"""

import fcntl
import os

import pytest

_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '.pytest_cache')
os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Keep prepared datasets and tokenizer caches out of the user's home during tests.
os.environ.setdefault('JAXFORMER_DATA_DIR', os.path.join(_CACHE, 'jaxformer-data'))
# Many tests train the same tiny shapes: compile each once (in-process and in subprocesses).
os.environ.setdefault('JAXFORMER_COMPILATION_CACHE', os.path.join(_CACHE, 'xla'))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.environ['JAXFORMER_COMPILATION_CACHE'])
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.3')


@pytest.fixture(scope='session', autouse=True)
def shared_datasets():
  """Prepares the embedded datasets in JAXFORMER_DATA_DIR once, whichever worker comes first."""
  import tensorflow_datasets as tfds

  import jaxformer.data  # noqa: F401  (registers the builders)

  tfds.disable_progress_bar()
  data_dir = os.environ['JAXFORMER_DATA_DIR']
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, '.prepare.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    for name in ('jaxformer_shakespeare', 'jaxformer_genre', 'jaxformer_numbers/en_de'):
      builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
      if not builder.is_prepared():
        builder.download_and_prepare()
  return data_dir


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A fresh data dir with every shipped builder prepared from scratch (no network)."""
  import tensorflow_datasets as tfds

  import jaxformer.data  # noqa: F401  (registers the builders)

  tfds.disable_progress_bar()
  path = str(tmp_path_factory.mktemp('tfds'))
  for name in ('jaxformer_shakespeare', 'jaxformer_genre', 'jaxformer_numbers/en_de'):
    builder = tfds.builder(name, data_dir=path, file_format='array_record')
    assert not builder.is_prepared()
    builder.download_and_prepare()
    assert builder.is_prepared()
  assert not os.path.exists(os.path.expanduser('~/tensorflow_datasets/jaxformer_genre'))
  return path
