"""Translating with an encoder-decoder: greedy decoding and beam search, both reading the
source's cross-attention keys/values from the decoder cache (computed once per source)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxformer import sharding as jf_sharding
from jaxformer.decode.cache import (
  check_translate,
  decoder_cache,
  decoder_cache_shapes,
  decoder_step,
  leaf_name,
)
from jaxformer.decode.sampling import decodable_ids, only_ids_below

# A finite "minus infinity" for log-probabilities: -inf - (-inf) would be NaN.
NEG_INF = -1.0e9


def translate_greedy(
  model, params, src, *, max_len: int, bos_id: int, eos_id: int, num_tokens: int | None = None
):
  """Greedy translation. src int32[B, S] (0-padded) -> int32[B, max_len] tokens without BOS.

  Each row ends with EOS (then zeros) unless it ran out of room. num_tokens: emit only ids below
  it (the tokenizer's vocabulary, when model.vocab_size is larger); padded ids never.
  """
  src = jnp.asarray(src, jnp.int32)
  check_translate(model, src, max_len)
  return _translate_greedy(
    model,
    params,
    src,
    max_len=int(max_len),
    bos_id=int(bos_id),
    eos_id=int(eos_id),
    num_tokens=decodable_ids(model, num_tokens),
  )


@functools.partial(jax.jit, static_argnames=('model', 'max_len', 'num_tokens'))
def _translate_greedy(model, params, src, *, max_len, bos_id, eos_id, num_tokens):
  batch = src.shape[0]
  encoded = model.apply({'params': params}, src, method='encode')  # [B, S, D]
  cache = decoder_cache(model, params, encoded, src, max_len)

  def keep_going(state):
    i, _, _, _, done = state
    return (i < max_len) & ~jnp.all(done)

  def step(state):
    i, out, cache, last, done = state
    logits, cache = decoder_step(model, params, cache, None, src, last[:, None])  # [B, 1, V]
    logits = only_ids_below(logits[:, 0], num_tokens)  # [B, V]
    new = jnp.where(done, 0, jnp.argmax(logits, axis=-1).astype(jnp.int32))  # [B]
    out = lax.dynamic_update_slice_in_dim(out, new[:, None], i, axis=1)
    return i + 1, out, cache, new, done | (new == eos_id)

  state = (
    jnp.array(0, jnp.int32),
    jnp.zeros((batch, max_len), jnp.int32),
    cache,
    jnp.full((batch,), bos_id, jnp.int32),
    jnp.zeros((batch,), bool),
  )
  return lax.while_loop(keep_going, step, state)[1]


# ----- beam search --------------------------------------------------------------------------


def length_penalty(length, alpha: float):
  """GNMT length penalty (Wu et al. 2016): ((5 + length) / 6) ** alpha. alpha=0 turns it off."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def beam_search(
  model,
  params,
  src,
  *,
  beam_size: int = 4,
  alpha: float = 0.6,
  max_len: int,
  bos_id: int,
  eos_id: int,
  num_tokens: int | None = None,
):
  """Beam search translation. src int32[B, S] -> (tokens int32[B, max_len], scores float32[B]).

  A hypothesis's score is its total log-probability divided by the GNMT length penalty of
  its length (EOS included). The search follows fairseq's rules:
    - each step scores every (beam, token) extension and takes the best 2K candidates;
    - a candidate ending in EOS is finished only if it ranks in the top K (it would have held
      a beam slot); the beams are then refilled with the best K candidates not ending in EOS,
      so K hypotheses stay alive;
    - a sentence is done once it has K finished hypotheses and its best live hypothesis can
      no longer beat the worst of them, at any length up to max_len (or max_len is reached);
    - the answer is the best-scoring finished hypothesis; a sentence with none falls back to
      its best alive one (length max_len, no EOS).
  With alpha=0 and beam_size=1 this is exactly greedy decoding. With alpha > 0 even one beam
  may continue past greedy's EOS, to a longer hypothesis that the length penalty favours.
  num_tokens: extend only with ids below it (the tokenizer's vocabulary); padded ids never.
  """
  src = jnp.asarray(src, jnp.int32)
  check_translate(model, src, max_len)
  if beam_size < 1:
    raise ValueError(f'beam_size must be >= 1, got {beam_size}')
  if alpha < 0:
    raise ValueError(f'alpha (length penalty) must be >= 0, got {alpha}')
  return _beam_search(
    model,
    params,
    src,
    beam_size=int(beam_size),
    alpha=float(alpha),
    max_len=int(max_len),
    bos_id=int(bos_id),
    eos_id=int(eos_id),
    num_tokens=decodable_ids(model, num_tokens),
  )


@functools.partial(jax.jit, static_argnames=('model', 'beam_size', 'max_len', 'num_tokens'))
def _beam_search(model, params, src, *, beam_size, alpha, max_len, bos_id, eos_id, num_tokens):
  batch, k = src.shape[0], beam_size
  encoded = model.apply({'params': params}, src, method='encode')  # [B, S, D]
  # Every beam is a row of one big batch: [B, ...] -> [B * K, ...], beams of a sentence adjacent.
  encoded = jnp.repeat(encoded, k, axis=0)  # [B * K, S, D]
  src_k = jnp.repeat(src, k, axis=0)  # [B * K, S]
  cache = decoder_cache(model, params, encoded, src_k, max_len)
  # Which axis of each cache leaf is the batch: named by the cache itself (scanned layers put
  # a [num_layers] axis first); -1 for the index.
  axes = jf_sharding.logical_axis_index(
    decoder_cache_shapes(model, encoded, src_k, max_len), 'batch'
  )
  # The beams of a sentence share its source, so its cross-attention keys/values are the same in
  # every beam: gathering them each step (2 x [B*K, S, heads, head_dim] per layer) changes
  # nothing and made beam search 1.6x slower on the number-word model.
  axes = jax.tree_util.tree_map_with_path(
    lambda path, ax: -1 if leaf_name(path) in ('cross_key', 'cross_value') else ax, axes
  )

  def reorder(cache, beam_origin):
    """beam_origin [B, K]: which old beam each new beam continues. Gathers the cache rows."""
    rows = (jnp.arange(batch)[:, None] * k + beam_origin).reshape(-1)  # [B * K]
    return jax.tree.map(lambda x, ax: x if ax < 0 else jnp.take(x, rows, axis=ax), cache, axes)

  def keep_going(state):
    # A sentence is done once it has K finished hypotheses AND its best live one can no
    # longer beat the worst of them. Stopping at K finished alone lets low-probability early
    # EOS hypotheses fill the pool before the likely one finishes (seen with label-smoothed
    # models). A live hypothesis's log-prob (<= 0) only falls as it grows, while the length
    # penalty grows with alpha > 0, so the best score it can still reach is its log-prob now
    # over the penalty at max_len (t5x's bound); today's penalty would underestimate it.
    i, _, alive_logp, _, _, fin_scores, fin_count = state
    alive_best = alive_logp[:, 0] / length_penalty(max_len, alpha)
    done = (fin_count >= k) & (alive_best <= fin_scores[:, k - 1])
    return (i < max_len) & ~jnp.all(done)

  def step(state):
    i, alive_seqs, alive_logp, cache, fin_seqs, fin_scores, fin_count = state
    prev = lax.dynamic_index_in_dim(
      alive_seqs, jnp.maximum(i - 1, 0), axis=2, keepdims=False
    )  # [B, K]
    last = jnp.where(i == 0, bos_id, prev)
    logits, cache = decoder_step(model, params, cache, None, src_k, last.reshape(batch * k, 1))
    vocab = logits.shape[-1]
    # Ids the tokenizer lacks get NEG_INF: the log-probabilities are over the real ids, and
    # such an extension scores like an empty beam slot (never `real`, never kept over one).
    logits = only_ids_below(logits[:, 0].astype(jnp.float32), num_tokens, NEG_INF)
    logp = jax.nn.log_softmax(logits).reshape(batch, k, vocab)
    logp = logp + alive_logp[:, :, None]  # [B, K, V]

    # The best 2K extensions over all beams: at least K of them do not end in EOS.
    cand_logp, flat = lax.top_k(logp.reshape(batch, k * vocab), 2 * k)  # [B, 2K]
    cand_beam, cand_tok = flat // vocab, (flat % vocab).astype(jnp.int32)
    cand_seqs = jnp.take_along_axis(alive_seqs, cand_beam[:, :, None], axis=1)  # [B, 2K, T]
    cand_seqs = lax.dynamic_update_slice_in_dim(cand_seqs, cand_tok[:, :, None], i, axis=2)
    ends = cand_tok == eos_id
    real = cand_logp > NEG_INF / 2  # not an extension of an empty beam slot

    # Finished: EOS candidates that rank in the top K, while the sentence still needs some.
    in_beam = jnp.arange(2 * k)[None, :] < k
    finishing = ends & in_beam & real
    new_scores = jnp.where(finishing, cand_logp / length_penalty(i + 1, alpha), -jnp.inf)
    pool_scores = jnp.concatenate([fin_scores, new_scores], axis=1)  # [B, 3K]
    pool_seqs = jnp.concatenate([fin_seqs, cand_seqs], axis=1)  # [B, 3K, T]
    fin_scores, best = lax.top_k(pool_scores, k)  # [B, K]
    fin_seqs = jnp.take_along_axis(pool_seqs, best[:, :, None], axis=1)
    fin_count = fin_count + finishing.sum(axis=1)

    # Alive: the best K candidates that do not end in EOS; the cache follows their beams.
    alive_logp, pick = lax.top_k(jnp.where(ends, NEG_INF, cand_logp), k)  # [B, K]
    alive_seqs = jnp.take_along_axis(cand_seqs, pick[:, :, None], axis=1)  # [B, K, T]
    cache = reorder(cache, jnp.take_along_axis(cand_beam, pick, axis=1))
    return i + 1, alive_seqs, alive_logp, cache, fin_seqs, fin_scores, fin_count

  # Only beam 0 is live at the start, so the K beams do not all pick the same first token.
  alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1))
  state = (
    jnp.array(0, jnp.int32),
    jnp.zeros((batch, k, max_len), jnp.int32),
    alive_logp,
    cache,
    jnp.zeros((batch, k, max_len), jnp.int32),
    jnp.full((batch, k), -jnp.inf, jnp.float32),
    jnp.zeros((batch,), jnp.int32),
  )
  _, alive_seqs, alive_logp, _, fin_seqs, fin_scores, fin_count = lax.while_loop(
    keep_going, step, state
  )

  # fin_* and alive_* come out of top_k, so index 0 is each sentence's best.
  has_finished = fin_count > 0
  tokens = jnp.where(has_finished[:, None], fin_seqs[:, 0], alive_seqs[:, 0])
  scores = jnp.where(
    has_finished, fin_scores[:, 0], alive_logp[:, 0] / length_penalty(max_len, alpha)
  )
  return tokens, scores
