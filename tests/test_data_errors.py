"""Every bad input gets a one-line DataError naming the problem; nothing half-written is left."""

import os
import sys
import time

import numpy as np
import pytest
from data_fixtures import cfg

from jaxformer.data import DataError, build_task_data, encoding, sources


def build(dataset_cfg, task='lm', max_len=16, batch_size=4, **kw):
  return build_task_data(
    dataset_cfg,
    task=task,
    max_len=max_len,
    batch_size=batch_size,
    seed=0,
    process_index=kw.pop('process_index', 0),
    process_count=kw.pop('process_count', 1),
    **kw,
  )


def one_line(excinfo):
  assert '\n' not in str(excinfo.value)
  return str(excinfo.value)


def test_offline_real_dataset_fails_fast_naming_it(tmp_path):
  start = time.time()
  with pytest.raises(DataError) as e:
    build({'name': 'lm1b', 'data_dir': str(tmp_path)})
  assert time.time() - start < 10
  msg = one_line(e)
  assert "'lm1b'" in msg and f'python -m jaxformer.data.prepare lm1b --data_dir={tmp_path}' in msg
  assert os.listdir(tmp_path) == []  # nothing written


def test_a_wheel_install_is_told_the_prepare_extras_pinned_packages_for_its_platform(tmp_path):
  """Without a checkout to name, the hint installs what pyproject's 'prepare' extra pins for this
  platform (tensorflow-cpu on Linux x86-64, tensorflow elsewhere), not an unpinned package."""
  import platform
  import re

  from jaxformer.data import prepare

  with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'pyproject.toml')) as f:
    pins = dict(re.findall(r'"(tensorflow(?:-cpu)?)([<>=][^;"]+);', f.read()))
  linux_x86 = sys.platform == 'linux' and platform.machine() == 'x86_64'
  name = 'tensorflow-cpu' if linux_x86 else 'tensorflow'
  command = prepare.install_command(checkout=str(tmp_path))  # no pyproject.toml there
  assert command.startswith('pip install "') and command.count('"') == 2
  got = command.split('"')[1]
  assert got.startswith(name) and sorted(got[len(name) :].split(',')) == sorted(
    pins[name].split(',')
  )


def test_the_install_hint_takes_only_the_prepare_extras_requirements(monkeypatch):
  """A core dependency with a platform marker is not part of the extra."""
  from jaxformer.data import prepare

  requires = [
    'numpy>=1.26',
    'importlib_resources>=6.0; python_version >= "3.0"',
    'pytest>=8; extra == "test"',
    'tensorflow-cpu<2.22,>=2.21; python_version >= "3.0" and extra == "prepare"',
  ]
  monkeypatch.setattr(prepare.importlib.metadata, 'requires', lambda name: requires)
  assert prepare.prepare_requirements() == ['tensorflow-cpu<2.22,>=2.21']


@pytest.mark.parametrize(
  'dataset_cfg,task,match',
  [
    ({'name': 'no_such_dataset'}, 'lm', "unknown dataset 'no_such_dataset'"),
    ({'name': 'jaxformer_numbers/en_xx'}, 'translate', 'unknown config'),
    ({'name': 'jaxformer_genre', 'train_split': 'nope'}, 'classify', "no split 'nope'"),
    (
      {'name': 'jaxformer_genre', 'train_split': 'train[:abc]'},
      'classify',
      "bad split slice 'train\\[:abc\\]'",
    ),
    ({'name': 'jaxformer_genre', 'eval_split': 'dev'}, 'classify', "no split 'dev'"),
    ({'name': 'jaxformer_genre'}, 'lm', "is a 'classify' dataset"),
    ({'name': 'jaxformer_shakespeare'}, 'summarize', 'unknown task'),
    ({'name': 'jaxformer_shakespeare', 'tokenizer': 'wordpiece'}, 'lm', 'unknown tokenizer'),
    ({'name': 'jaxformer_genre', 'label_key': 'genre_id'}, 'classify', "no feature 'genre_id'"),
    ({'name': ''}, 'lm', 'dataset.name is empty'),
  ],
)
def test_unknown_dataset_config_split_task(data_dir, dataset_cfg, task, match):
  with pytest.raises(DataError, match=match) as e:
    build({'data_dir': data_dir, **dataset_cfg}, task)
  one_line(e)


def test_empty_glob_and_empty_corpus(tmp_path):
  with pytest.raises(DataError, match='matches no files') as e:
    build({'name': 'text_files', 'files': str(tmp_path / '*.txt')})
  one_line(e)
  (tmp_path / 'blank.txt').write_text('\n\n   \n')
  with pytest.raises(DataError, match='empty'):
    build({'name': 'text_files', 'files': str(tmp_path / '*.txt'), 'tokenizer': 'byte'})
  with pytest.raises(DataError, match='dataset.files'):
    build({'name': 'text_files'})


def test_non_utf8_bytes_report_file_and_offset(tmp_path):
  path = tmp_path / 'latin1.txt'
  path.write_bytes('caf\u00e9 ok\n'.encode('utf-8') + 'na\u00efve\n'.encode('latin-1'))
  with pytest.raises(DataError) as e:
    build({'name': 'text_files', 'files': str(tmp_path / '*.txt'), 'tokenizer': 'byte'})
  msg = one_line(e)
  assert (
    str(path) in msg and 'byte offset 11' in msg
  )  # 'café ok\n' is 9 bytes, then 'na', then 0xEF


def test_label_out_of_range():
  class Labels(sources.Source):
    name, task, splits, label_names = 'toy', 'classify', ('train',), ('neg', 'pos')

    def num_examples(self, split):
      return 3

    def example(self, split, index):
      return {'text': 'x', 'label': [0, 1, 2][index]}

    def fingerprint(self, split):
      return 'toy'

  from jaxformer.data import ByteTokenizer

  with pytest.raises(DataError, match=r'label 2 of example 2 .* out of range \[0, 2\)'):
    encoding.encode_split(Labels(), 'train', ByteTokenizer())


@pytest.mark.parametrize('vocab_size,match', [(10, 'too small'), (50_000, 'too large')])
def test_vocab_size_too_small_or_large_for_corpus(tmp_path, vocab_size, match):
  (tmp_path / 'a.txt').write_text('a tiny corpus\n' * 50)
  with pytest.raises(DataError, match=match) as e:
    build(
      {
        'name': 'text_files',
        'files': str(tmp_path / '*.txt'),
        'vocab_size': vocab_size,
        'data_dir': str(tmp_path / 'dd'),
      }
    )
  one_line(e)
  cache = tmp_path / 'dd' / 'jaxformer_cache' / 'tokenizers'
  assert not cache.exists() or os.listdir(cache) == []  # no partial tokenizer left behind


@pytest.mark.parametrize('max_len', [1, 0, -3])
def test_max_len_below_two(max_len):
  with pytest.raises(DataError, match='max_len must be >= 2'):
    build({'name': 'jaxformer_shakespeare'}, max_len=max_len)


def test_batch_size_must_split_over_processes(data_dir):
  with pytest.raises(DataError, match='multiple of the process count 4'):
    build(cfg('jaxformer_shakespeare', data_dir), batch_size=6, process_count=4)


def test_interrupted_cache_write_is_redone(tmp_path, data_dir):
  (tmp_path / 'a.txt').write_text('hello world\n' * 100)
  dataset_cfg = {
    'name': 'text_files',
    'files': str(tmp_path / '*.txt'),
    'tokenizer': 'byte',
    'data_dir': str(tmp_path / 'dd'),
  }
  first = build(dataset_cfg).encoded('train').tokens.values.copy()
  encoded_dir = tmp_path / 'dd' / 'jaxformer_cache' / 'encoded'
  (entry,) = os.listdir(encoded_dir)
  os.remove(encoded_dir / entry / 'meta.json')  # as if killed before the write completed
  os.remove(encoded_dir / entry / 'tokens.values.npy')
  again = build(dataset_cfg).encoded('train').tokens.values
  np.testing.assert_array_equal(first, again)
  assert (encoded_dir / entry / 'meta.json').exists() and len(os.listdir(encoded_dir)) == 1


def test_tfds_split_slices_select_the_documented_rows(data_dir):
  """'train[:10%]' and 'train[10:20]' read exactly those rows of the split (TFDS slicing)."""
  src = sources.open_source({'name': 'jaxformer_genre', 'data_dir': data_dir}, 'classify')
  assert src.num_examples('train[:10%]') == src.num_examples('train') // 10
  assert [src.example('train[10:20]', i) for i in range(10)] == [
    src.example('train', i) for i in range(10, 20)
  ]
  data = build(
    {
      'name': 'jaxformer_genre',
      'data_dir': data_dir,
      'train_split': 'train[:10%]',
      'tokenizer': 'byte',
    },
    'classify',
  )
  assert data.splits['train'] == 'train[:10%]' and len(data.train_indices()) == src.num_examples(
    'train[:10%]'
  )
