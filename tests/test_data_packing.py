"""dataset.pack for translation: several examples a train row, each computed as if alone."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxformer import ModelConfig
from jaxformer.data import build_task_data
from jaxformer.models import EncoderDecoder
from jaxformer.training import steps

L = 128  # byte tokens: the longest pair (up to 999,999 in words) fits whole


def numbers(pack, batch_size=8):
  return build_task_data(
    {'name': 'jaxformer_numbers/en_de', 'tokenizer': 'byte', 'pack': pack},
    task='translate',
    max_len=L,
    batch_size=batch_size,
    seed=0,
    process_index=0,
    process_count=1,
  )


def test_packed_rows_hold_every_example_once_and_more_tokens():
  packed, plain = numbers(True), numbers(False)
  bins = packed.packed_bins()
  n = plain.encoded('train').num_examples
  assert sorted(i for b in bins for i in b) == list(range(n))
  rows = [packed.packed_row(b) for b in bins[:50]]
  for b, row in zip(bins, rows):
    assert row['targets_segmentation'].max() == len(b) == row['inputs_segmentation'].max()
    for seg in range(1, len(b) + 1):  # positions restart at 0 in each example
      pos = row['targets_position'][row['targets_segmentation'] == seg]
      np.testing.assert_array_equal(pos, np.arange(len(pos)))
  real = lambda d, k: sum(float(d._row('train', i)['weights'].sum()) for i in range(k))  # noqa: E731
  plain_share = real(plain, 200) / (200 * L)
  packed_share = sum(r['weights'].sum() for r in rows) / (len(rows) * L)
  assert plain_share < 0.4 and packed_share > 0.6  # measured on all rows: 0.34 -> 0.70


def test_packed_batch_loss_equals_the_examples_summed_loss():
  data = numbers(True)
  cfg = ModelConfig(
    vocab_size=259, d_model=32, num_heads=2, num_encoder_layers=2, num_decoder_layers=2,
    max_len=L, dropout_rate=0.0,
  )  # fmt: skip
  model = EncoderDecoder(cfg)
  ones = jnp.ones((1, L), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(0), ones, ones)['params'])
  eval_step = jax.jit(steps.make_eval_step(model, task='translate'))
  bins = data.packed_bins()[:8]
  batch = {k: np.stack([data.packed_row(b)[k] for b in bins]) for k in data.packed_row(bins[0])}
  packed = np.asarray(eval_step(params, batch), np.float64)
  examples = [i for b in bins for i in b]
  rows = [data._row('train', i) for i in examples]
  alone = np.asarray(eval_step(params, {k: np.stack([r[k] for r in rows]) for k in rows[0]}))
  np.testing.assert_allclose(packed[:2], alone[:2], rtol=1e-5)  # loss sum, token count
  assert packed[2] == alone[2]  # correct tokens


def test_packing_changes_no_evaluation_batch_and_resumes_exactly():
  packed, plain = numbers(True), numbers(False)
  for a, b in zip(packed.eval_batches('validation'), plain.eval_batches('validation')):
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
  it = packed.train_iterator()
  first = [next(it) for _ in range(3)]
  state = json.loads(json.dumps(it.get_state()))
  after = [next(it) for _ in range(2)]
  again = numbers(True).train_iterator()
  again.set_state(state)
  for expected in after:
    got = next(again)
    assert all((expected[k] == got[k]).all() for k in expected)
  assert 'targets_segmentation' in first[0] and first[0]['inputs'].shape == (8, L)


def lm_docs(tmp_path, pack):
  rng = np.random.default_rng(0)
  docs = [' '.join(['word'] * int(rng.integers(1, 12))) + f' {i}' for i in range(40)]
  (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
  cfg = {'name': 'files', 'train_files': str(tmp_path / 'docs.jsonl'), 'tokenizer': 'byte'}
  return build_task_data(
    dict(cfg, pack=pack, data_dir=str(tmp_path / 'dd')),
    task='lm',
    max_len=16,
    batch_size=4,
    seed=0,
    process_index=0,
    process_count=1,
  )


def test_packed_lm_documents_cover_every_target_once_with_their_loss(tmp_path):
  from jaxformer.models import DecoderLM

  data = lm_docs(tmp_path, True)
  docs = data.encoded('train').tokens
  rows = [data.packed_row(b) for b in data.packed_bins()]
  # [EOS] + document + EOS: every document token and its EOS is a target exactly once
  assert sum(r['weights'].sum() for r in rows) == sum(len(docs[i]) for i in range(len(docs)))
  model = DecoderLM(
    ModelConfig(vocab_size=259, d_model=32, num_heads=2, num_layers=2, max_len=16, dropout_rate=0.0)
  )
  params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 16), jnp.int32))['params'])
  eval_step = jax.jit(steps.make_eval_step(model, task='lm'))
  bins = data.packed_bins()[:6]
  batch = {k: np.stack([data.packed_row(b)[k] for b in bins]) for k in rows[0]}
  packed = np.asarray(eval_step(params, batch), np.float64)
  alone = []  # each chunk in its own unpacked row
  for i in (i for b in bins for i in b):
    row = data.packed_row([i])
    alone.append({k: row[k] for k in ('inputs', 'targets', 'weights')})
  sums = np.asarray(eval_step(params, {k: np.stack([r[k] for r in alone]) for k in alone[0]}))
  np.testing.assert_allclose(packed[:2], sums[:2], rtol=1e-5)
  plain = lm_docs(tmp_path, False)
  for a, b in zip(data.eval_batches('validation'), plain.eval_batches('validation')):
    assert all((a[k] == b[k]).all() for k in a)  # evaluation is never packed
