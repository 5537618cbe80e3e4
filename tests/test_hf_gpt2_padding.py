"""GPT-2's id 0 is the real token '!', and jaxformer's id 0 is padding: the GPT-2 tokenizer
shifts GPT-2's ids up by one and the import adds a padding row, so '!' is read, scored and
pooled like any other token. Checked on the small random GPT-2 and BPE of tests/hf_fixtures.py."""

import json
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

pytest.importorskip('transformers')

from hf_fixtures import make_reference, reference_logits  # noqa: E402

from jaxformer import decode, hf  # noqa: E402
from jaxformer.checkpoint import load_pretrained  # noqa: E402
from jaxformer.data import DataError, load_tokenizer  # noqa: E402
from jaxformer.data.bpe import ID_OFFSET  # noqa: E402
from jaxformer.data.pipeline import TaskData  # noqa: E402
from jaxformer.data.sources import Source  # noqa: E402
from jaxformer.model.transformer import Classifier, DecoderLM  # noqa: E402
from jaxformer.training import steps  # noqa: E402

TEXT = 'Hello! World!'


@pytest.fixture(scope='module')
def ref(tmp_path_factory):
  return make_reference(str(tmp_path_factory.mktemp('gpt2')))


@pytest.fixture(scope='module')
def imported(ref, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('imported') / 'gpt2')
  assert hf.main(['import', ref.dirs['pt'], '--output', out]) == 0
  loaded = load_pretrained(out)
  return loaded, load_tokenizer(loaded.tokenizer_dir)


def test_exclamation_marks_encode_to_real_ids_and_round_trip(ref, imported):
  from transformers import GPT2TokenizerFast

  _, tok = imported
  theirs = GPT2TokenizerFast.from_pretrained(ref.dirs['pt'])
  assert theirs.encode('!') == [0]  # the case at stake: '!' is GPT-2's id 0
  ids = tok.encode(TEXT)
  assert 0 not in ids and ids.count(tok.encode('!')[0]) == 2
  assert tok.decode(ids) == TEXT
  assert tok.decode(ids + [tok.pad_id] * 3) == TEXT  # padding decodes to nothing


class _Texts(Source):
  """A one-split LM source holding `texts`."""

  name, task, splits = 'texts', 'lm', ('validation',)

  def __init__(self, texts):
    self.texts = texts

  def num_examples(self, split):
    return len(self.texts)

  def example(self, split, index):
    return {'text': self.texts[index]}

  def fingerprint(self, split):
    return json.dumps(self.texts)


def test_lm_rows_of_gpt2_text_score_and_count_every_exclamation_mark(imported):
  _, tok = imported
  common = dict(splits={'validation': 'validation'}, task='lm', max_len=16, batch_size=2, seed=0)
  data = TaskData(
    source=_Texts([TEXT]),
    tokenizer=tok,
    process_index=0,
    process_count=1,
    cache_dir='',
    **common,
  )
  (batch,) = list(data.eval_batches('validation'))
  bang = tok.encode('!')[0]
  real = batch['weights'] > 0
  assert real.sum() == len(tok.encode(TEXT))  # the text's tokens and its EOS, nothing else
  assert (batch['targets'][real] == bang).sum() == 2  # both '!' are scored...
  assert (batch['inputs'][real] != tok.pad_id).all()  # ...and read as tokens, not padding
  assert float(steps.real_tokens('lm', batch)) == real.sum()
  # Bits per byte divide by the bytes of the targets: the text after its first token.
  first = tok.decode(tok.encode(TEXT)[:1])
  assert data.scored_bytes('validation') == len(TEXT.encode()) - len(first.encode())


@pytest.mark.parametrize('pooling', ['mean', 'last'])
def test_a_gpt2_classifier_reads_a_trailing_exclamation_mark(imported, pooling):
  loaded, tok = imported
  rows = [tok.encode(TEXT[:-1]), tok.encode(TEXT)]  # the same text, with and without its '!'
  tokens = np.zeros((2, 16), np.int32)
  for i, ids in enumerate(rows):
    tokens[i, : len(ids)] = ids
  model = Classifier(loaded.model_config, num_classes=3, pooling=pooling)
  head = nn.unbox(model.init(jax.random.key(0), tokens)['params'])['head']
  out = np.asarray(
    model.apply({'params': {'backbone': loaded.params['backbone'], 'head': head}}, tokens)
  )
  assert np.abs(out[0] - out[1]).max() > 1e-4


def test_the_padding_row_takes_almost_no_probability(ref, imported):
  """The import's padding row (the mean of GPT-2's rows) has probability <= 1/(V + 1), and
  GPT-2's tokens keep transformers' log-probabilities to within log(1 + 1/V)."""
  loaded, _ = imported
  vocab = ref.config['vocab_size']
  gpt2_tokens = np.random.default_rng(0).integers(0, vocab, (2, 24), dtype=np.int32)
  logits = DecoderLM(loaded.model_config).apply({'params': loaded.params}, gpt2_tokens + ID_OFFSET)
  ours = np.asarray(jax.nn.log_softmax(logits))
  theirs = np.asarray(jax.nn.log_softmax(reference_logits(ref.model, gpt2_tokens)))
  assert np.exp(ours[..., 0]).max() <= 1 / (vocab + 1) + 1e-7
  drop = theirs - ours[..., ID_OFFSET:]
  assert drop.min() > -1e-4 and drop.max() < np.log1p(1 / vocab) + 1e-4


@pytest.mark.parametrize('tied', [True, False])
def test_padding_rows_are_added_and_dropped_exactly(tied):
  from jaxformer.checkpoint.hf_gpt2 import add_padding_rows, drop_padding_rows
  from jaxformer.config import ModelConfig

  rng = np.random.default_rng(0)
  cfg = ModelConfig(vocab_size=7, d_model=4, tie_embeddings=tied)
  params = {'backbone': {'token_embed': {'embedding': rng.standard_normal((7, 4))}, 'x': 1}}
  if not tied:
    params['lm_head'] = {'kernel': rng.standard_normal((4, 7))}
  padded_cfg, padded = add_padding_rows(cfg, params, ID_OFFSET)
  assert padded_cfg.vocab_size == 7 + ID_OFFSET and padded['backbone']['x'] == 1
  out = padded.get('lm_head', {}).get('kernel', padded['backbone']['token_embed']['embedding'].T)
  original = params.get('lm_head', {}).get(
    'kernel', params['backbone']['token_embed']['embedding'].T
  )
  np.testing.assert_array_equal(out[:, ID_OFFSET:], original)  # GPT-2's id i is at i + 1
  np.testing.assert_allclose(out[:, 0], original.mean(1))  # the padding row: the mean row
  back_cfg, back = drop_padding_rows(padded_cfg, padded, ID_OFFSET, padded_cfg.vocab_size)
  assert back_cfg == cfg
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_sampling_never_draws_the_padding_id():
  logits = np.array([[9.0, 1.0, 0.5, 0.0]] * 64, np.float32)  # the padding id is the favourite
  key = jax.random.key(0)
  for temperature in (0.0, 1.0, 5.0):
    drawn = np.asarray(decode.sample_logits(logits, key, temperature=temperature))
    assert (drawn != 0).all(), temperature


def test_an_export_imported_before_the_padding_id_is_refused(imported, tmp_path):
  loaded, _ = imported
  old = tmp_path / 'tokenizer'
  shutil.copytree(loaded.tokenizer_dir, old)
  meta = json.loads((old / 'tokenizer.json').read_text())
  del meta['id_offset']  # as saved when GPT-2's ids were used unshifted
  (old / 'tokenizer.json').write_text(json.dumps(meta))
  with pytest.raises(DataError, match='import the model again'):
    load_tokenizer(str(old))
