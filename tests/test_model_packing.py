"""Packed rows (several examples in one row, with segment ids and restarting positions) compute
each example exactly as if it were alone in its own row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxformer import ModelConfig
from jaxformer.models import DecoderLM, EncoderDecoder
from jaxformer.training.steps import loss_sums

L = 16


def cfg(position):
  return ModelConfig(
    vocab_size=40, d_model=32, num_heads=2, num_layers=2, num_encoder_layers=2,
    num_decoder_layers=2, max_len=L, dropout_rate=0.0, position=position,
  )  # fmt: skip


def pack(seqs):
  """tokens, segment ids and positions [1, L] of `seqs` placed one after another."""
  tokens, seg, pos = np.zeros((3, 1, L), np.int32)
  at = 0
  for i, s in enumerate(seqs):
    tokens[0, at : at + len(s)], seg[0, at : at + len(s)] = s, i + 1
    pos[0, at : at + len(s)] = np.arange(len(s))
    at += len(s)
  return tokens, seg, pos


def alone(s):
  row = np.zeros((1, L), np.int32)
  row[0, : len(s)] = s
  return row


@pytest.mark.parametrize('position', ['learned', 'sinusoidal', 'rope'])
def test_packed_lm_rows_equal_examples_alone(position):
  model = DecoderLM(cfg(position))
  docs = [[5, 6, 7, 8, 2], [9, 10, 11, 2], [12, 13, 14, 15, 16, 2]]
  params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, L), jnp.int32))['params'])
  tokens, seg, pos = pack(docs)
  packed = model.apply({'params': params}, tokens, segments=seg, positions=pos)
  at, loss_sum, weight_sum = 0, 0.0, 0.0
  for d in docs:
    single = model.apply({'params': params}, alone(d))
    np.testing.assert_allclose(packed[0, at : at + len(d)], single[0, : len(d)], atol=1e-5)
    inputs, targets = alone(d[:-1]), alone(d[1:])
    w = (np.arange(L) < len(d) - 1).astype(np.float32)[None]
    s, n, _ = loss_sums(model.apply({'params': params}, inputs), targets, w)
    loss_sum, weight_sum, at = loss_sum + float(s), weight_sum + float(n), at + len(d)
  # The packed loss (targets shifted inside each segment) is the examples' summed loss.
  targets = np.where(np.roll(seg, -1) == seg, np.roll(tokens, -1), 0)
  w = ((np.roll(seg, -1) == seg) & (seg > 0)).astype(np.float32)
  packed_inputs = np.where(w > 0, tokens, 0)
  s, n, _ = loss_sums(
    model.apply({'params': params}, packed_inputs, segments=seg, positions=pos), targets, w
  )
  assert float(n) == weight_sum
  np.testing.assert_allclose(float(s), loss_sum, rtol=1e-5)
  unmasked = model.apply({'params': params}, tokens, positions=pos)  # no segments: they mix
  assert not np.allclose(unmasked[0, 5:9], packed[0, 5:9], atol=1e-3)


@pytest.mark.parametrize('position', ['learned', 'rope'])
def test_packed_translation_rows_equal_examples_alone(position):
  model = EncoderDecoder(cfg(position))
  # Targets no longer than sources: an unpacked row's cross-attention lets query i see key i even
  # at source padding when source and target rows have the same length (attention_mask adds the
  # diagonal whenever Lq == Lk), which packing's segment term removes.
  pairs = [([5, 6, 7, 2], [1, 8, 9], [8, 9, 2]), ([10, 11, 3, 2], [1, 12, 13, 14], [12, 13, 14, 2])]
  ones = jnp.ones((1, L), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(1), ones, ones)['params'])
  src, src_seg, src_pos = pack([p[0] for p in pairs])
  dec, tgt_seg, tgt_pos = pack([p[1] for p in pairs])
  tgt, _, _ = pack([p[2] for p in pairs])
  packing = {
    'inputs_segmentation': src_seg,
    'inputs_position': src_pos,
    'targets_segmentation': tgt_seg,
    'targets_position': tgt_pos,
  }
  logits = model.apply({'params': params}, src, dec, packing=packing)
  s, n, _ = loss_sums(logits, tgt, (tgt_seg > 0).astype(np.float32))
  loss_sum, at = 0.0, 0
  for source, dec_in, target in pairs:
    single = model.apply({'params': params}, alone(source), alone(dec_in))
    np.testing.assert_allclose(
      logits[0, at : at + len(dec_in)], single[0, : len(dec_in)], atol=1e-5
    )
    w = (np.arange(L) < len(target)).astype(np.float32)[None]
    loss_sum += float(loss_sums(single, alone(target), w)[0])
    at += len(dec_in)
  assert float(n) == 7
  np.testing.assert_allclose(float(s), loss_sum, rtol=1e-5)


def test_cross_attention_ignores_padded_source_keys_when_lengths_match():
  """A target longer than its source: decoder query i must not see the padded source key i.

  attention_mask lets a self-attention query see itself (so a padding row is never empty); it
  used to do that whenever Lq == Lk, cross-attention included.
  """
  model = EncoderDecoder(cfg('learned'))
  ones = jnp.ones((1, L), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(2), ones, ones)['params'])
  src, tgt = [5, 6, 2], [1, 8, 9, 10, 11, 12, 13]
  same_length = model.apply({'params': params}, alone(src), alone(tgt))  # S == T == 16
  short_src = model.apply({'params': params}, alone(src)[:, :8], alone(tgt))  # S = 8
  np.testing.assert_allclose(same_length[0, : len(tgt)], short_src[0, : len(tgt)], atol=1e-5)
