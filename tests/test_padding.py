"""Extra right-padding changes no output at a real position, in every model and mode.

Padding is token 0. Each case runs a model on a batch, then on the same batch with 5 more pad
columns (source or target), and compares the outputs at the real positions (1e-5, float32).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_fixtures import random_params, tiny, tokens  # noqa: E402

from jaxformer import decode
from jaxformer.model.attention import MIN_BLOCKED_LENGTH
from jaxformer.models import Classifier, DecoderLM, EncoderDecoder

EXTRA = 5


def close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


def pad(x, extra=EXTRA):
  return jnp.pad(x, ((0, 0), (0, extra)))


def batch(length, real_lengths, seed=1):
  """tokens [len(real_lengths), length], row r real for its first real_lengths[r] positions."""
  x = tokens((len(real_lengths), length), seed=seed)
  return jnp.where(jnp.arange(length)[None] < jnp.asarray(real_lengths)[:, None], x, 0)


def lm_logits(cfg, length=8, real=(8, 5)):
  model = DecoderLM(cfg)
  x = batch(length, real)
  params = random_params(model, x)
  run = jax.jit(model.apply)
  short, long = run({'params': params}, x), run({'params': params}, pad(x))[:, :length]
  return short, long, x != 0


def classifier_logits(cfg, pooling, backbone_kind='decoder'):
  model = Classifier(cfg, num_classes=3, pooling=pooling, backbone_kind=backbone_kind)
  x = batch(8, (8, 5))
  params = random_params(model, x)
  run = jax.jit(model.apply)
  return run({'params': params}, x), run({'params': params}, pad(x)), None


def seq2seq_logits(cfg, padded):
  """Source and target of the same length 7 (row 1: a 3-token source, a 6-token target)."""
  model = EncoderDecoder(cfg)
  src, tgt = batch(7, (7, 3)), batch(7, (7, 6), seed=2)
  params = random_params(model, src, tgt)
  run = jax.jit(model.apply)
  short = run({'params': params}, src, tgt)
  if padded == 'source':
    long = run({'params': params}, pad(src), tgt)
  else:
    long = run({'params': params}, src, pad(tgt))[:, :7]
  return short, long, tgt != 0


def lm_cached_logits(cfg):
  """Prefill 3 tokens, then 5 single steps, into a cache of room 8 and of room 8 + EXTRA."""
  model = DecoderLM(cfg)
  x = tokens((2, 8))
  params = random_params(model, x)
  step = jax.jit(functools.partial(model.apply, decode=True, mutable=['cache']))

  def run(room):
    cache, outs = decode.lm_cache(model, 2, room), []
    for chunk in [x[:, :3]] + [x[:, t : t + 1] for t in range(3, 8)]:
      logits, mutated = step({'params': params, 'cache': cache}, chunk)
      cache = mutated['cache']
      outs.append(logits)
    return jnp.concatenate(outs, axis=1)

  return run(8), run(8 + EXTRA), None


def seq2seq_cached_logits(cfg):
  """Step-by-step cached decoding of a target, with the source padded to 7 and to 7 + EXTRA."""
  model = EncoderDecoder(cfg)
  src, tgt = batch(7, (7, 3)), tokens((2, 6), seed=2)
  params = random_params(model, src, tgt)

  def run(src):
    return teacher_forced_and_cached(model, params, src, tgt)[1]

  return run(src), run(pad(src)), None


def empty_cache(model, *args):
  """The flax-convention cache (init with decode=True), as zeros."""
  init = functools.partial(model.init, decode=True, method='decode')
  abstract = nn.unbox(jax.eval_shape(init, jax.random.key(0), *args)['cache'])
  return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract)


def teacher_forced_and_cached(model, params, src, tgt):
  """(logits of one teacher-forced pass, logits of cached decoding one token at a time)."""
  forced = jax.jit(model.apply)({'params': params}, src, tgt)
  encoded = jax.jit(functools.partial(model.apply, method='encode'))({'params': params}, src)
  step = jax.jit(functools.partial(model.apply, decode=True, mutable=['cache'], method='decode'))
  cache, outs = empty_cache(model, encoded, src, tgt), []
  for t in range(tgt.shape[1]):
    logits, mutated = step({'params': params, 'cache': cache}, encoded, src, tgt[:, t : t + 1])
    cache = mutated['cache']
    outs.append(logits)
  return forced, jnp.concatenate(outs, axis=1)


CASES = {
  'lm': lambda cfg: lm_logits(cfg),
  # From MIN_BLOCKED_LENGTH positions, CPU 'auto' runs causal attention in query blocks:
  # 126 real positions (one kernel) against 131 (blocks, of other sizes).
  'lm_query_blocks': lambda cfg: lm_logits(
    cfg.replace(max_len=MIN_BLOCKED_LENGTH + 8), MIN_BLOCKED_LENGTH - 2, (126, 100)
  ),
  'lm_kv_cache': lm_cached_logits,
  'classifier_mean': lambda cfg: classifier_logits(cfg, 'mean'),
  'classifier_last': lambda cfg: classifier_logits(cfg, 'last'),
  'classifier_encoder': lambda cfg: classifier_logits(cfg, 'mean', 'encoder'),
  'seq2seq_source': lambda cfg: seq2seq_logits(cfg, 'source'),
  'seq2seq_target': lambda cfg: seq2seq_logits(cfg, 'target'),
  'seq2seq_kv_cache': seq2seq_cached_logits,
}


@pytest.mark.parametrize('scan_layers', [True, False], ids=['scan', 'loop'])
@pytest.mark.parametrize('case', list(CASES))
def test_right_padding_changes_no_output_at_a_real_position(case, scan_layers):
  short, long, real = CASES[case](tiny(scan_layers=scan_layers, attention_impl='auto'))
  assert short.shape == long.shape
  if real is not None:  # compare only where the query token is real
    short, long = short * real[..., None], long * real[..., None]
  close(long, short)


@pytest.mark.parametrize('position', ['learned', 'rope'])
def test_teacher_forced_logits_equal_cached_decoding_with_a_padded_source(position):
  # Source and target have the same length, where cross-attention once let target position i
  # see source position i although it is padding (row 1's source is 3 tokens of 7); cached
  # decoding (one query at a time) never did.
  model = EncoderDecoder(tiny(position=position))
  src, tgt = batch(7, (7, 3)), tokens((2, 7), seed=2)
  params = random_params(model, src, tgt)
  forced, cached = teacher_forced_and_cached(model, params, src, tgt)
  close(cached, forced)
