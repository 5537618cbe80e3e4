"""build_task_data pipelines: shapes, determinism, resume, per-process shards, real-dataset
specs."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_fixtures import cfg

from jaxformer.data import ByteTokenizer, DataError, build_task_data


def build(
  dataset_cfg, task, *, max_len=32, batch_size=8, seed=0, process_index=0, process_count=1, **kw
):
  return build_task_data(
    dataset_cfg,
    task=task,
    max_len=max_len,
    batch_size=batch_size,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    **kw,
  )


@pytest.fixture(scope='module')
def numbered_files(tmp_path_factory):
  """A text corpus whose every line is unique, so LM windows can be identified by content."""
  root = tmp_path_factory.mktemp('corpus')
  for f in range(3):
    (root / f'part{f}.txt').write_text(
      ''.join(f'line {f}-{i:04d}\n' for i in range(300)), encoding='utf-8'
    )
  return str(root / '*.txt')


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize(
  'name,task,shapes',
  [
    ('jaxformer_shakespeare', 'lm', {'inputs': (8, 32), 'targets': (8, 32), 'weights': (8, 32)}),
    ('jaxformer_genre', 'classify', {'inputs': (8, 32), 'targets': (8,), 'weights': (8,)}),
    (
      'jaxformer_numbers/en_de',
      'translate',
      {'inputs': (8, 32), 'decoder_inputs': (8, 32), 'targets': (8, 32), 'weights': (8, 32)},
    ),
  ],
)
def test_batch_shapes_and_dtypes(data_dir, tmp_path, name, task, shapes):
  data = build(
    cfg(name, data_dir, vocab_size=600), task, workdir_tokenizer_dir=str(tmp_path / 'tok')
  )
  batch = next(data.train_iterator())
  assert {k: v.shape for k, v in batch.items()} == shapes
  for key, value in batch.items():
    assert value.dtype == (np.float32 if key == 'weights' else np.int32), key
  eval_batches = list(data.eval_batches(data.splits['eval'], batch_size=16))
  assert all(b['inputs'].shape == (16, 32) for b in eval_batches)  # fixed shapes, last one padded
  assert (tmp_path / 'tok' / 'tokenizer.json').exists()


def test_lm_windows_shift_by_one_and_eval_covers_every_token(data_dir):
  data = build(
    cfg('jaxformer_shakespeare', data_dir, tokenizer='byte'), 'lm', max_len=64, batch_size=32
  )
  batch = next(data.train_iterator())
  assert (batch['inputs'][:, 1:] == batch['targets'][:, :-1]).all() and batch['weights'].all()
  batches = list(data.eval_batches('validation'))
  weights = sum(float(b['weights'].sum()) for b in batches)
  stream = data.encoded('validation').tokens.values
  assert weights == len(stream) - 1  # every token after the first is a target exactly once
  assert data.tokenizer.eos_id in stream and data.examples('validation', limit=1)[0][
    'text'
  ].startswith('HAMLET')


@pytest.mark.parametrize(
  'name,task,max_len',
  [('jaxformer_shakespeare', 'lm', 32), ('jaxformer_numbers/en_de', 'translate', 64)],
)
def test_scored_bytes_are_the_bytes_of_exactly_the_scored_targets(data_dir, name, task, max_len):
  data = build(cfg(name, data_dir, vocab_size=600), task, max_len=max_len)
  split, sizes = data.splits['eval'], data.tokenizer.token_bytes()
  batches = list(data.eval_batches(split))
  scored = [int(np.sum(sizes[b['targets']] * (b['weights'] > 0))) for b in batches]
  assert data.scored_bytes(split, 2 * data.batch_size) == sum(scored[:2])
  assert data.scored_bytes(split) == sum(scored)  # every row, the padded last batch included
  if task == 'lm':  # a prefix's bytes per token differ from the whole split's
    tokens = [float(b['weights'].sum()) for b in batches]
    assert sum(scored[:2]) / sum(tokens[:2]) != pytest.approx(sum(scored) / sum(tokens), rel=1e-3)


def test_translate_layout_and_truncation_is_counted(data_dir, caplog):
  data = build(cfg('jaxformer_numbers/en_de', data_dir), 'translate', max_len=40, batch_size=4)
  tok = data.tokenizer
  assert isinstance(tok, ByteTokenizer)
  batch = next(iter(data.eval_batches('validation')))
  row = {k: v[0] for k, v in batch.items()}
  n = int(row['weights'].sum())
  assert row['decoder_inputs'][0] == tok.bos_id
  assert (row['decoder_inputs'][1:n] == row['targets'][: n - 1]).all()
  ex = data.examples('validation', limit=1)[0]
  if len(ex['target'].encode('utf-8')) + 1 <= 40:
    assert row['targets'][n - 1] == tok.eos_id and tok.decode(row['targets']) == ex['target']
  with caplog.at_level('WARNING'):
    data.encoded('train')
  assert data.truncated['train'] > 0 and 'truncated' in caplog.text
  longest = max(len(e['source']) for e in data.examples('train'))
  assert longest + 1 > 40  # the count is real: those examples exist and were kept, cut to 40
  assert data.num_rows('train') == 20_000


def test_classify_examples_per_class_and_labels(data_dir):
  data = build(
    cfg(
      'jaxformer_genre', data_dir, train_split='train_full', examples_per_class=7, vocab_size=600
    ),
    'classify',
    batch_size=3,
  )
  idx = data.train_indices()
  assert np.bincount(data.encoded('train_full').labels[idx]).tolist() == [7, 7, 7]
  assert data.label_names == ('comedy', 'history', 'tragedy') and data.num_classes == 3


def test_same_seed_same_batches_and_other_seed_differs(numbered_files):
  def first(seed):
    return take(
      build(
        {'name': 'text_files', 'files': numbered_files, 'tokenizer': 'byte'}, 'lm', seed=seed
      ).train_iterator(),
      5,
    )

  a, b, c = first(1), first(1), first(2)
  assert all((x['inputs'] == y['inputs']).all() for x, y in zip(a, b))
  assert not all((x['inputs'] == y['inputs']).all() for x, y in zip(a, c))


def test_shifted_lm_windows_move_every_epoch_cover_it_once_and_resume_exactly(numbered_files):
  """dataset.shift_windows: epoch e's rows are the windows starting at offset_e + i * max_len,
  each once, with a different offset in different epochs; a resume replays the same rows."""
  dataset_cfg = {'name': 'text_files', 'files': numbered_files, 'tokenizer': 'byte'}
  L, B = 32, 8
  data = build(dict(dataset_cfg, shift_windows=True), 'lm', max_len=L, batch_size=B)
  stream = np.asarray(data.encoded('train').tokens.values)
  start_of = {stream[s : s + L + 1].tobytes(): s for s in range(len(stream) - L)}  # lines unique
  n = len(data.train_indices())
  batches = take(data.train_iterator(), 3 * n // B)
  rows = [np.append(b['inputs'][r], b['targets'][r, -1]) for b in batches for r in range(B)]
  assert all(b['weights'].all() for b in batches)
  starts = np.array([start_of[row.astype(stream.dtype).tobytes()] for row in rows])
  offsets = []
  for epoch in range(2):
    epoch_starts = np.sort(starts[epoch * n : (epoch + 1) * n])
    offsets.append(int(epoch_starts[0]))
    assert offsets[-1] == data.window_offset(epoch) < L
    np.testing.assert_array_equal(epoch_starts, offsets[-1] + L * np.arange(n))
  assert len({*offsets, data.window_offset(2)}) > 1  # not one fixed cut, as without the option
  assert n == (len(stream) - 1 - (L - 1)) // L  # every offset leaves n whole windows

  it = data.train_iterator()
  take(it, n // B + 2)  # past the first epoch boundary
  resumed = build(dict(dataset_cfg, shift_windows=True), 'lm', max_len=L, batch_size=B)
  resumed = resumed.train_iterator()
  resumed.set_state(json.loads(json.dumps(it.get_state())))
  for expected, got in zip(batches[n // B + 2 :], take(resumed, 5)):
    np.testing.assert_array_equal(expected['inputs'], got['inputs'])
  with pytest.raises(DataError, match='shift_windows'):
    build(dict(dataset_cfg, shift_windows=True, pack=True), 'lm', max_len=L, batch_size=B)


@pytest.mark.parametrize('name,task', [('text_files', 'lm'), ('jaxformer_genre', 'classify')])
def test_resume_from_state_gives_exactly_the_remaining_batches(
  numbered_files, data_dir, name, task
):
  dataset_cfg = {
    'name': name,
    'files': numbered_files,
    'data_dir': data_dir,
    'vocab_size': 600,
    'tokenizer': 'byte',
  }
  data = build(dataset_cfg, task, batch_size=16)
  steps = data.steps_per_epoch + 3  # run past an epoch boundary
  uninterrupted = take(data.train_iterator(), steps)
  it = data.train_iterator()
  take(it, 4)
  state = json.loads(json.dumps(it.get_state()))  # the state survives a JSON checkpoint
  resumed = build(dataset_cfg, task, batch_size=16).train_iterator()
  resumed.set_state(state)
  for expected, got in zip(uninterrupted[4:], take(resumed, steps - 4)):
    for key in expected:
      np.testing.assert_array_equal(expected[key], got[key])


@pytest.mark.parametrize('process_count', [1, 2, 4])
def test_per_process_shards_are_disjoint_and_complete(numbered_files, data_dir, process_count):
  # Train: each global batch is cut into contiguous per-process slices, so the processes'
  # rows are disjoint, together equal the single-process batch, and one epoch covers every
  # window except the dropped remainder.
  files_cfg = {
    'name': 'text_files',
    'files': numbered_files,
    'val_fraction': 0.2,
    'tokenizer': 'byte',
  }
  batch = 4 * process_count
  single = build(files_cfg, 'lm', max_len=16, batch_size=batch)
  steps = single.steps_per_epoch
  expected = np.concatenate([b['inputs'] for b in take(single.train_iterator(), steps)])
  shards = [
    take(
      build(
        files_cfg, 'lm', max_len=16, batch_size=batch, process_index=p, process_count=process_count
      ).train_iterator(),
      steps,
    )
    for p in range(process_count)
  ]
  assert all(b['inputs'].shape[0] == 4 for shard in shards for b in shard)
  joined = np.concatenate(
    [np.concatenate([shards[p][k]['inputs'] for p in range(process_count)]) for k in range(steps)]
  )
  np.testing.assert_array_equal(joined, expected)
  seen = [r.tobytes() for r in joined]
  total = len(single.train_indices())
  assert len(seen) == len(set(seen)) == steps * batch and total - len(seen) < batch
  # Eval: every example of the split exactly once across processes, padding weighted 0.
  labels, weights, rows = [], [], 0
  for p in range(process_count):
    data = build(
      cfg('jaxformer_genre', data_dir, vocab_size=600),
      'classify',
      batch_size=8 * process_count,
      process_index=p,
      process_count=process_count,
    )
    batches = list(data.eval_batches('validation'))
    assert all(b['inputs'].shape[0] == 8 for b in batches)
    rows += sum(b['inputs'].shape[0] for b in batches)
    real = np.concatenate([b['weights'] for b in batches]) > 0
    labels += np.concatenate([b['targets'] for b in batches])[real].tolist()
    weights.append(real.sum())
  assert sum(weights) == 150 and sorted(labels) == sorted(
    data.encoded('validation').labels.tolist()
  )
  assert rows % (8 * process_count) == 0


def test_text_files_validation_fraction(numbered_files):
  data = build(
    {'name': 'text_files', 'files': numbered_files, 'val_fraction': 0.1, 'tokenizer': 'byte'}, 'lm'
  )
  val = ''.join(e['text'] for e in data.examples('validation'))
  train = ''.join(e['text'] for e in data.examples('train'))
  assert val.count('\n') == 90 and train.count('\n') == 810
  assert 'line 0-0299' in val and 'line 0-0299' not in train


@pytest.mark.parametrize(
  'name,task,keys',
  [
    ('imdb_reviews', 'classify', {}),
    ('glue/sst2', 'classify', {}),
    ('lm1b', 'lm', {}),
    ('tiny_shakespeare', 'lm', {}),
    ('wmt14_translate/de-en', 'translate', {'source_key': 'de', 'target_key': 'en'}),
  ],
)
def test_real_dataset_feature_spec_flows_through_pipeline(tmp_path, name, task, keys):
  # mock_data fakes the examples from the dataset's real feature spec and no-ops
  # download_and_prepare.
  with tfds.testing.mock_data(num_examples=24):
    data = build(
      {'name': name, 'download': True, 'data_dir': str(tmp_path), 'tokenizer': 'byte', **keys},
      task,
      max_len=16,
      batch_size=4,
    )
    batch = next(data.train_iterator())
    eval_rows = sum(float(b['weights'].sum() > 0) for b in data.eval_batches('train'))
  assert batch['inputs'].shape == (4, 16) and batch['inputs'].dtype == np.int32
  assert eval_rows > 0
  if task == 'classify':
    assert batch['targets'].shape == (4,) and data.num_classes == 2
  if task == 'translate':
    assert batch['decoder_inputs'][0, 0] == data.tokenizer.bos_id
