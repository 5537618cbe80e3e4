"""The advertised real TFDS datasets (configs/imdb.py, lm1b.py, wmt14_de_en.py), offline.

Preparing one needs TensorFlow (the 'prepare' extra: tfds extracts archives with tf.io.gfile);
the tests that prepare skip without it, and CI installs the extra after the main suite to run
this file again. Training must never need TensorFlow: every training run here is a train.py
subprocess in which `import tensorflow` fails, as on an install without the extra.
"""

import importlib
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import promise
import pytest
import real_archives
import tensorflow_datasets as tfds
from etils import epath
from helpers import REPO

from jaxformer.data import DataError, prepare, sources

CONFIGS = {
  'imdb_reviews': 'configs/imdb.py',
  'lm1b': 'configs/lm1b.py',
  'wmt14_translate/de-en': 'configs/wmt14_de_en.py',
}
TINY = {  # a tiny model and a 6-step run of the shipped config
  'model.d_model': 32,
  'model.num_heads': 2,
  'model.num_layers': 1,
  'model.num_encoder_layers': 1,
  'model.num_decoder_layers': 1,
  'model.max_len': 32,
  'batch_size': 8,
  'num_train_steps': 6,
  'warmup_steps': 2,
  'eval_every_steps': 6,
  'eval_steps': 1,
  'log_every_steps': 3,
  'checkpoint_every_steps': 6,
  'sample_tokens': 0,
  'progress': False,
  'dataset.vocab_size': 340,  # SentencePiece: >= ~310 (bytes, chars), <= ~396 (lm1b's pieces)
}
TF_IMPORT_CPU_S = 10  # CPU seconds `import tensorflow` may take on a slow shared machine
TINY_FLAGS = [
  f'--config.{k}={str(v).lower() if isinstance(v, bool) else v}' for k, v in TINY.items()
]


def run_without_tf(target, *args, timeout=300, wrapper='without_tensorflow.py', env=None):
  """Runs `python TARGET ARGS` with TensorFlow hidden; returns (CompletedProcess, CPU seconds).

  wrapper='offline.py' runs it with TensorFlow but without a network instead."""
  env = dict(env or os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH', '')) if p)
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  proc = subprocess.run(
    [sys.executable, os.path.join(REPO, 'tests', wrapper), target, *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  return proc, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def error_line(proc, cpu_s, wall_s):
  """The one stderr line of a run that must fail with exit 2 within 10 s."""
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
  # CPU time: on a shared, oversubscribed test machine wall time says little. The wall bound
  # still rules out waiting on the network (tfds's own retries take ~200 s offline).
  assert cpu_s < 10 and wall_s < 60, (cpu_s, wall_s)
  return lines[0]


# ---- without TensorFlow ------------------------------------------------------------------------
def test_unprepared_dataset_names_the_install_and_prepare_commands(tmp_path):
  data_dir, workdir = tmp_path / 'data', tmp_path / 'run'
  start = time.time()
  proc, cpu_s = run_without_tf(
    'train.py',
    '--config=configs/imdb.py',
    f'--workdir={workdir}',
    f'--config.dataset.data_dir={data_dir}',
  )
  line = error_line(proc, cpu_s, time.time() - start)
  assert f'pip install -e "{REPO}[prepare]"' in line, line
  assert f'python -m jaxformer.data.prepare imdb_reviews --data_dir={data_dir}' in line, line
  assert 'download=True' not in line  # it would not work on this install
  assert not workdir.exists() and not data_dir.exists()
  # The named command exists and the extra it installs is declared.
  assert run_without_tf('jaxformer.data.prepare', '--help')[0].returncode == 0
  assert 'prepare = [' in open(os.path.join(REPO, 'pyproject.toml')).read()


@pytest.mark.parametrize('how', ['prepare', 'download=True'])
def test_preparing_without_tensorflow_is_one_line_naming_the_install(tmp_path, how):
  data_dir, workdir = tmp_path / 'data', tmp_path / 'run'
  start = time.time()
  if how == 'prepare':
    proc, cpu_s = run_without_tf('jaxformer.data.prepare', 'lm1b', f'--data_dir={data_dir}')
  else:
    proc, cpu_s = run_without_tf(
      'train.py',
      '--config=configs/lm1b.py',
      f'--workdir={workdir}',
      f'--config.dataset.data_dir={data_dir}',
      '--config.dataset.download=True',
    )
  line = error_line(proc, cpu_s, time.time() - start)
  assert 'needs TensorFlow' in line, line
  assert f'`pip install -e "{REPO}[prepare]" && python -m jaxformer.data.prepare lm1b' in line
  assert not workdir.exists() and not data_dir.exists()


def test_offline_download_fails_in_seconds_naming_the_host(monkeypatch, tmp_path):
  for var in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
    monkeypatch.delenv(var, raising=False)

  class Unreachable:  # tfds would retry this for ~200 s before giving up
    url_infos = {
      'http://no-such-host.invalid/data.tar.gz': tfds.core.download.checksums.UrlInfo(
        size=3 * 2**20, checksum='0' * 64, filename='data.tar.gz'
      )
    }

  start = time.time()
  with pytest.raises(DataError) as e:
    prepare.check_network('some_dataset', Unreachable(), str(tmp_path))
  assert time.time() - start < prepare.NETWORK_TIMEOUT_S + 1
  assert 'cannot reach no-such-host.invalid' in str(e.value) and '\n' not in str(e.value)
  assert 'python -m jaxformer.data.prepare some_dataset' in str(e.value)


@pytest.mark.parametrize('how', ['prepare', 'download=True'])
def test_offline_with_tensorflow_is_one_line_naming_the_command_for_a_machine_online(tmp_path, how):
  """With the extra installed but no network, both ways to prepare stop with exit 2 and one line
  naming the host and the prepare command, before tfds's retries (~200 s) and before any write."""
  pytest.importorskip('tensorflow', reason='needs the prepare extra: pip install -e ".[prepare]"')
  env = {k: v for k, v in os.environ.items() if not k.lower().endswith('_proxy')}
  data_dir, workdir = tmp_path / 'data', tmp_path / 'run'
  start = time.time()
  if how == 'prepare':
    command = ('jaxformer.data.prepare', 'imdb_reviews', f'--data_dir={data_dir}')
  else:
    command = (
      'train.py',
      '--config=configs/imdb.py',
      f'--workdir={workdir}',
      f'--config.dataset.data_dir={data_dir}',
      '--config.dataset.download=True',
    )
  proc, cpu_s = run_without_tf(*command, wrapper='offline.py', env=env)
  # TensorFlow's import alone takes several CPU seconds: allow it on top of the usual bound.
  line = error_line(proc, cpu_s - TF_IMPORT_CPU_S, time.time() - start)
  assert 'cannot reach' in line and "'imdb_reviews'" in line, line
  assert 'python -m jaxformer.data.prepare imdb_reviews --data_dir=DIR' in line, line
  assert not workdir.exists() and not any(data_dir.rglob('*.array_record*'))


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
@pytest.mark.parametrize('name', list(CONFIGS))
def test_mock_data_trains_the_shipped_config(tmp_path, name):
  """tfds.testing.mock_data, as the flax examples test on real datasets: nothing prepared."""
  from jaxformer.training import train_and_evaluate

  module = importlib.import_module('jaxformer.configs.' + os.path.basename(CONFIGS[name])[:-3])
  config = module.get_config()
  config.update_from_flattened_dict(TINY)
  config.dataset.data_dir = str(tmp_path / 'data')
  config.dataset.tokenizer = 'byte'  # mock text is random letters: nothing to learn a vocabulary on
  with tfds.testing.mock_data(num_examples=40):
    summary = train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['last_step'] == 6 and np.isfinite(summary['best_val_loss'])


# ---- with TensorFlow (the 'prepare' extra) -----------------------------------------------------
def fake_downloads(monkeypatch, archives: dict):
  """tfds's download manager hands out local archives ({file name: path}) instead of downloading.

  Only the network is faked: checksums are skipped (the archives are small stand-ins), while
  extraction, the builder's parsing and writing ArrayRecord are tfds's own.
  """

  def download(self, resource):
    url = getattr(resource, 'url', resource)
    return promise.Promise.resolve(epath.Path(archives[url.rsplit('/', 1)[-1]]))

  monkeypatch.setattr(tfds.download.DownloadManager, '_download_or_get_cache', download)
  monkeypatch.setattr(prepare, 'check_network', lambda *args, **kwargs: None)


EXPECTED = {  # split -> examples, from what tests/real_archives.py writes
  'imdb_reviews': {'train': 24, 'test': 24, 'unsupervised': 4},
  'lm1b': {'train': 40, 'test': 8},
  'wmt14_translate/de-en': {'train': 72, 'validation': 24, 'test': 24},
}


@pytest.mark.parametrize('name', list(CONFIGS))
def test_real_builder_prepares_then_trains_without_tensorflow(monkeypatch, tmp_path, name):
  pytest.importorskip('tensorflow', reason='needs the prepare extra: pip install -e ".[prepare]"')
  make = {'imdb_reviews': real_archives.imdb, 'lm1b': real_archives.lm1b}
  paths = make.get(name, real_archives.wmt14_de_en)(str(tmp_path))
  paths = [paths] if isinstance(paths, str) else paths
  fake_downloads(monkeypatch, {os.path.basename(p): p for p in paths})
  data_dir = str(tmp_path / 'data')

  assert prepare.main([name, f'--data_dir={data_dir}']) == 0
  assert not os.path.exists(os.path.join(data_dir, 'downloads', name.replace('/', '_')))
  for split, n in EXPECTED[name].items():
    source = tfds.data_source(
      name, split=split, data_dir=data_dir, builder_kwargs={'file_format': 'array_record'}
    )
    assert len(source) == n, (split, len(source))
  first = sources.open_source({'name': name, 'data_dir': data_dir}, sources.KNOWN[name].task)
  if name == 'imdb_reviews':  # labels come from the archive's pos/neg folders
    for i in range(24):
      example = first.example('train', i)
      assert example['text'].startswith('train review')
      assert first.label_names[example['label']] in example['text']
  if name == 'wmt14_translate/de-en':
    example = first.example('validation', 0)
    assert '(newstest2013)' in example['source'] and '(newstest2013)' in example['target']

  workdir = tmp_path / 'run'
  proc, _ = run_without_tf(
    'train.py',
    f'--config={CONFIGS[name]}',
    f'--workdir={workdir}',
    *TINY_FLAGS,
    f'--config.dataset.data_dir={data_dir}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.load(open(workdir / 'summary.json'))
  assert summary['last_step'] == 6 and np.isfinite(summary['best_val_loss'])


def test_download_true_prepares_from_train_and_evaluate_inputs(monkeypatch, tmp_path):
  """dataset.download=True: the training process prepares through the same path (it crashed in
  tfds's extractor before, for want of TensorFlow)."""
  pytest.importorskip('tensorflow', reason='needs the prepare extra: pip install -e ".[prepare]"')
  from jaxformer.data import build_task_data

  archive = real_archives.imdb(str(tmp_path))
  fake_downloads(monkeypatch, {os.path.basename(archive): archive})
  data = build_task_data(
    {
      'name': 'imdb_reviews',
      'download': True,
      'data_dir': str(tmp_path / 'data'),
      'tokenizer': 'byte',
    },
    task='classify',
    max_len=32,
    batch_size=8,
    seed=0,
    process_index=0,
    process_count=1,
  )
  assert data.label_names == ('neg', 'pos') and data.num_rows('train') == 24
  assert next(data.train_iterator())['inputs'].shape == (8, 32)


def test_a_failed_download_is_one_line_and_leaves_no_dataset(monkeypatch, tmp_path, capsys):
  pytest.importorskip('tensorflow', reason='needs the prepare extra: pip install -e ".[prepare]"')
  import requests

  def download(self, resource):
    return promise.Promise.reject(requests.ConnectionError('Connection reset by peer'))

  monkeypatch.setattr(tfds.download.DownloadManager, '_download_or_get_cache', download)
  monkeypatch.setattr(prepare, 'check_network', lambda *args, **kwargs: None)
  data_dir = str(tmp_path / 'data')
  assert prepare.main(['imdb_reviews', f'--data_dir={data_dir}']) == 2
  lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert len(lines) == 1 and 'Connection reset by peer' in lines[0], lines
  assert f'`python -m jaxformer.data.prepare imdb_reviews --data_dir={data_dir}` again' in lines[0]
  assert not sources.is_prepared(sources.tfds_builder('imdb_reviews', data_dir))
