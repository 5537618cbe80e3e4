"""jaxformer.analysis_seq2seq: capturing an EncoderDecoder leaves its logits unchanged, the
captured states are the stacks' real outputs, and padding never reaches the probe features."""

import jax.numpy as jnp
import numpy as np
import pytest
from model_fixtures import random_params, tiny, tokens

from jaxformer import analysis_seq2seq as seq2seq
from jaxformer.models import EncoderDecoder


def build(**kw):
  # Different depths for the two stacks, so a mixed-up stack shows in the shapes.
  cfg = tiny(num_encoder_layers=2, num_decoder_layers=3, **kw)
  src, tgt = tokens((3, 12), seed=1), tokens((3, 10), seed=2)
  return cfg, random_params(EncoderDecoder(cfg), src, tgt), src, tgt


@pytest.mark.parametrize(
  'kw', [{}, {'scan_layers': False, 'position': 'rope'}, {'norm': 'post', 'tie_embeddings': False}]
)
def test_capture_logits_equal_the_forward_pass(kw):
  cfg, params, src, tgt = build(**kw)
  plain = EncoderDecoder(cfg).apply({'params': params}, src, tgt)
  cap = seq2seq.capture(cfg, params, src, tgt)
  np.testing.assert_allclose(cap.logits, np.asarray(plain), atol=2e-5, rtol=2e-5)
  assert cap.encoder.shape == (3, 3, 12, cfg.d_model)
  assert cap.decoder.shape == (4, 3, 10, cfg.d_model)


def test_captured_states_are_each_stacks_embeddings_and_output():
  # Post-LN has no final norm: the encoder's output is its last state, and the (tied) logits
  # are the decoder's last state times the token table.
  cfg, params, src, tgt = build(norm='post', position='rope')
  cap = seq2seq.capture(cfg, params, src, tgt)
  encoded = EncoderDecoder(cfg).apply({'params': params}, src, method='encode')
  np.testing.assert_allclose(cap.encoder[-1], np.asarray(encoded), atol=2e-5, rtol=2e-5)
  table = np.asarray(params['token_embed']['embedding'])
  np.testing.assert_allclose(cap.decoder[-1] @ table.T, cap.logits, atol=1e-4, rtol=1e-4)
  # With rope nothing is added to the embeddings: layer 0 of both stacks is the shared table.
  ratio = cap.encoder[0][0, 0] / table[int(src[0, 0])]
  np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
  ratio = cap.decoder[0][1, 2] / table[int(tgt[1, 2])]
  np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)


def test_probe_features_ignore_padding():
  cfg, params, _, _ = build()
  lengths_src, lengths_tgt = [5, 9, 3], [4, 7, 2]

  def padded(length, lengths, seed):
    x = np.asarray(tokens((3, length), seed=seed))
    real = np.arange(length)[None, :] < np.asarray(lengths)[:, None]
    return np.where(real, x, 0), real

  short_src, short_real = padded(10, lengths_src, 1)
  short_tgt, short_tgt_real = padded(8, lengths_tgt, 2)
  # The same rows padded further: every real position must give the same features.
  long_src = np.pad(short_src, ((0, 0), (0, 6)))
  long_tgt = np.pad(short_tgt, ((0, 0), (0, 8)))
  # Padding holds different pieces for the decoder (it is causal, so it cannot see them) ...
  long_tgt[:, 8:] = 7
  long_tgt_real = np.pad(short_tgt_real, ((0, 0), (0, 8)))
  short = seq2seq.capture(cfg, params, short_src, short_tgt)
  long = seq2seq.capture(cfg, params, long_src, long_tgt)
  for a, b, ra, rb in (
    (short.encoder, long.encoder, short_real, long_src != 0),
    (short.decoder, long.decoder, short_tgt_real, long_tgt_real),
  ):
    rows_a, rows_b = seq2seq.real_positions(a, ra), seq2seq.real_positions(b, rb)
    assert rows_a.shape[1] == ra.sum()
    np.testing.assert_allclose(rows_a, rows_b, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(
      seq2seq.mean_over_real(a, ra), seq2seq.mean_over_real(b, rb), atol=2e-5, rtol=2e-5
    )
  # ... and whatever sits at a padded position never enters a pooled feature.
  poisoned = short.encoder.copy()
  poisoned[:, ~short_real] = np.nan
  pooled = seq2seq.mean_over_real(poisoned, short_real)
  np.testing.assert_allclose(pooled, seq2seq.mean_over_real(short.encoder, short_real), rtol=1e-6)
  manual = short.encoder[:, 2, :3].mean(1)  # row 2 has 3 real source tokens
  np.testing.assert_allclose(pooled[:, 2], manual, rtol=1e-5, atol=1e-6)


def test_capture_batches_agree_with_one_call():
  cfg, params, src, tgt = build()
  enc, dec = seq2seq.hidden_states(cfg, params, src, tgt, batch_size=2)
  cap = seq2seq.capture(cfg, params, src, tgt)
  np.testing.assert_allclose(enc, cap.encoder, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(dec, cap.decoder, atol=2e-5, rtol=2e-5)
  assert jnp.asarray(enc).dtype == jnp.float32
