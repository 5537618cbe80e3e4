"""Beam search against exhaustive search, on a tiny hand-built decoder whose log-probabilities
are a fixed table: the best sequence is known, so the search is checked, not the model."""

import itertools
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxformer import decode

PAD, BOS, EOS = 0, 1, 2


class ToyDecoder(nn.Module):
  """An encoder-decoder with known next-token log-probs, stored as a table parameter:

      log p(next | history) = table[context, token before last, last token]       [C, V, V, V]

  where context = the source's first token. Second order on purpose: the token before last
  is read from the 'cache', so beam search must carry each beam's cache along correctly. The
  cached history is stored [length, batch] (axes named, as decoding requires of every cache), so
  its batch axis is not the first one. Like the real model's cross-attention, decoding caches
  the context when given `encoded` and reads it from the cache when encoded is None.
  """

  vocab: int

  def encode(self, src, deterministic=True):
    return src[:, :1, None].astype(jnp.float32)  # [B, 1, 1]

  @nn.compact
  def decode(self, encoded, src, tgt_in, deterministic=True, decode=False):
    table = self.param('table', nn.initializers.zeros, (3, self.vocab, self.vocab, self.vocab))
    batch, length = tgt_in.shape
    named = lambda *axes: nn.with_logical_partitioning(jnp.zeros, axes)  # noqa: E731
    history = self.variable(
      'cache', 'history', named('length', 'batch'), (length, batch), jnp.int32
    )
    index = self.variable('cache', 'index', lambda: jnp.array(0, jnp.int32))
    cached_context = self.variable('cache', 'context', named('batch'), (batch,), jnp.int32)
    if encoded is None:
      context = cached_context.value
    else:
      context = cached_context.value = encoded[:, 0, 0].astype(jnp.int32)  # [B]
    if not decode or self.is_initializing():
      before = jnp.concatenate([jnp.full((batch, 1), BOS), tgt_in[:, :-1]], axis=1)
      return table[context[:, None], before, tgt_in]  # [B, L, V]
    if length == 0:
      return jnp.zeros((batch, 0, self.vocab))
    i = index.value
    before = jnp.where(
      i > 0, lax.dynamic_index_in_dim(history.value, jnp.maximum(i - 1, 0), 0, False), BOS
    )
    history.value = lax.dynamic_update_slice(history.value, tgt_in.T, (i, 0))
    index.value = i + 1
    return table[context, before, tgt_in[:, 0]][:, None]  # [B, 1, V]


def test_beam_search_finds_the_known_best_sequence_that_greedy_misses():
  # First order for clarity (same for every token before last). Vocabulary: pad bos eos a b.
  a, b, tiny = 3, 4, 1e-6
  p = np.full((5, 5), tiny)
  p[BOS, [a, b]] = 0.55, 0.45  # greedy takes 'a' ...
  p[a, [EOS, a, b]] = 0.4, 0.3, 0.3  # ... and ends with p = 0.55 * 0.4 = 0.22,
  p[b, [EOS, a, b]] = 0.9, 0.05, 0.05  # but 'b eos' has p = 0.45 * 0.9 = 0.405.
  p[[PAD, EOS], EOS] = 1.0
  logp = np.log(p / p.sum(1, keepdims=True))
  params = {'table': jnp.asarray(np.broadcast_to(logp, (3, 5, 5, 5)), jnp.float32)}
  model, src = ToyDecoder(vocab=5), jnp.array([[1, 3], [2, 3]], jnp.int32)
  greedy = decode.translate_greedy(model, params, src, max_len=4, bos_id=BOS, eos_id=EOS)
  np.testing.assert_array_equal(greedy, [[a, EOS, 0, 0]] * 2)
  tokens, scores = decode.beam_search(
    model, params, src, beam_size=2, alpha=0.6, max_len=4, bos_id=BOS, eos_id=EOS
  )
  np.testing.assert_array_equal(tokens, [[b, EOS, 0, 0]] * 2)
  expected = math.log(0.45 * 0.9 / (1 + 2 * tiny)) / ((5 + 2) / 6) ** 0.6
  np.testing.assert_allclose(scores, [expected] * 2, rtol=1e-4)
  one, _ = decode.beam_search(
    model, params, src, beam_size=1, alpha=0.0, max_len=4, bos_id=BOS, eos_id=EOS
  )
  np.testing.assert_array_equal(one, greedy)


def brute_force_best(logp_table, context, max_len, alpha):
  """The best EOS-terminated sequence over the real tokens {a, b}, by enumeration."""
  best, best_score = None, -np.inf
  for n in range(max_len):
    for body in itertools.product([3, 4], repeat=n):
      seq = list(body) + [EOS]
      total, before, last = 0.0, BOS, BOS
      for tok in seq:
        total += logp_table[context, before, last, tok]
        before, last = last, tok
      score = total / ((5 + len(seq)) / 6) ** alpha
      if score > best_score:
        best, best_score = seq, score
  return best, best_score


@pytest.mark.parametrize('alpha', [0.0, 1.0])
def test_wide_beam_equals_brute_force_search(alpha):
  # With a beam wider than the number of live prefixes, beam search is exhaustive: it must
  # return the best sequence of all, with finished hypotheses of every length kept.
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(3, 5, 5, 5)) * 2.0
  raw[..., [PAD, BOS]] = -1e4  # never emit pad or bos
  # EOS is likely only after one two-token pattern per context, so the best sequences are
  # long (4-5 tokens) and depend on the cached token before last.
  raw[..., EOS] = -6.0
  raw[0, 3, 4, EOS] = raw[1, 4, 3, EOS] = raw[2, 4, 4, EOS] = 3.0
  logp = raw - np.log(np.exp(raw).sum(-1, keepdims=True))
  params = {'table': jnp.asarray(logp, jnp.float32)}
  src = jnp.array([[0, 5], [1, 5], [2, 5]], jnp.int32)
  tokens, scores = decode.beam_search(
    ToyDecoder(vocab=5), params, src, beam_size=64, alpha=alpha, max_len=5, bos_id=BOS, eos_id=EOS
  )
  lengths = []
  for row in range(3):
    best, best_score = brute_force_best(logp, row, 5, alpha)
    lengths.append(len(best))
    np.testing.assert_array_equal(tokens[row], best + [0] * (5 - len(best)))
    assert scores[row] == pytest.approx(best_score, abs=1e-4)
  assert min(lengths) >= 4


def test_early_unlikely_eos_hypotheses_do_not_end_the_search():
  # A peaked model (like a label-smoothed one): 'a a eos' has p ~ 0.91, but every step offers an
  # unlikely EOS that ranks in the top K because the second beam is junk. Stopping as soon as K
  # hypotheses have finished would return one of those (regression: beam 4 scored 0.82 exact
  # match where greedy scored 0.995 on number words).
  a, b = 3, 4
  table = np.full((5, 5, 5), 1e-3)
  table[:, BOS, [a, b, EOS]] = 0.97, 0.01, 0.02  # first token
  table[BOS, a, [a, b, EOS]] = 0.97, 0.01, 0.02  # second token after 'a'
  table[a, a, [a, b, EOS]] = 0.01, 0.01, 0.98  # then stop
  table[:, b, EOS] = table[:, EOS, EOS] = table[:, PAD, EOS] = 0.9
  logp = np.log(table / table.sum(-1, keepdims=True))
  params = {'table': jnp.asarray(np.broadcast_to(logp, (3, 5, 5, 5)), jnp.float32)}
  src = jnp.array([[0, 5]], jnp.int32)
  for alpha in (0.0, 0.6):
    tokens, _ = decode.beam_search(
      ToyDecoder(vocab=5), params, src, beam_size=2, alpha=alpha, max_len=5, bos_id=BOS, eos_id=EOS
    )
    np.testing.assert_array_equal(tokens[0], [a, a, EOS, 0, 0])


def test_a_longer_hypothesis_that_wins_under_the_length_penalty_is_found():
  # Vocabulary: pad bos eos b a1..a5. 'eos' alone scores log 0.4 = -0.92; 'b eos' -1.04 (with
  # alpha 0.6); 'a1 .. a5 eos' has p = 0.28 but length 6, so it scores log 0.28 / 1.44 = -0.88
  # and wins. At step 2 two hypotheses have finished and the live 'a1 a2' (log p = -1.27)
  # scored at today's length penalty (-1.16) cannot beat them, but at length 6 it does: only
  # the bound at max_len's penalty keeps the search going.
  b, chain, tiny = 3, [4, 5, 6, 7, 8], 1e-6
  vocab = 9
  p = np.full((vocab, vocab), tiny)
  p[BOS, [EOS, b, chain[0]]] = 0.4, 0.32, 0.28
  p[b, EOS] = 1.0
  for here, after in zip(chain, chain[1:] + [EOS]):
    p[here, after] = 1.0
  p[[PAD, EOS], EOS] = 1.0
  logp = np.log(p / p.sum(1, keepdims=True))
  params = {'table': jnp.asarray(np.broadcast_to(logp, (3, vocab, vocab, vocab)), jnp.float32)}
  src = jnp.array([[0, 5]], jnp.int32)
  tokens, scores = decode.beam_search(
    ToyDecoder(vocab), params, src, beam_size=2, alpha=0.6, max_len=8, bos_id=BOS, eos_id=EOS
  )
  best, best_score = exhaustive_best(logp, max_len=8, alpha=0.6)
  assert best == chain + [EOS]
  np.testing.assert_array_equal(tokens[0], best + [0] * (8 - len(best)))
  assert scores[0] == pytest.approx(best_score, abs=1e-4)


def exhaustive_best(logp, max_len, alpha):
  """The best EOS-terminated sequence under the first-order table logp [V, V], by an exact
  branch and bound: a prefix's log-prob only falls, so it can score at most log p / lp(max_len)."""
  penalty = lambda n: ((5 + n) / 6) ** alpha  # noqa: E731
  best, best_score = None, -np.inf
  stack = [([], BOS, 0.0)]
  while stack:
    seq, last, total = stack.pop()
    for tok in range(2, logp.shape[0]):  # never pad or bos
      new_total, new_seq = total + logp[last, tok], seq + [tok]
      if new_total / penalty(max_len) <= best_score:
        continue
      if tok == EOS:
        score = new_total / penalty(len(new_seq))
        if score > best_score:
          best, best_score = new_seq, score
      elif len(new_seq) < max_len:
        stack.append((new_seq, tok, new_total))
  return best, best_score
