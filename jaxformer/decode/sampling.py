"""Choosing the next token from logits [..., V]: greedy, or sampled with temperature, top-k and
top-p (nucleus) filters. Padding (id 0) is never chosen."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

PAD_ID = 0  # every tokenizer's padding id: never text, so never sampled


def _ranks(logits):
  """Rank of each logit in its row, 0 = largest (ties broken by position). [..., V] -> [..., V]."""
  return jnp.argsort(jnp.argsort(-logits, axis=-1, stable=True), axis=-1)


def top_k_filter(logits, k):
  """Keeps the k largest logits of each row, sets the rest to -inf. logits [..., V].

  k <= 0 keeps everything. Exactly min(k, V) tokens survive, even with ties. k may be a traced
  value, so changing it does not recompile the decoding loop.
  """
  keep = (_ranks(logits) < k) | (k <= 0)
  return jnp.where(keep, logits, -jnp.inf)


def top_p_filter(logits, p: float):
  """Nucleus filter: keeps the smallest set of most likely tokens whose probability covers p.

  logits [..., V]. A token survives when the tokens ranked above it hold less than p of the
  probability mass, so the most likely token always survives. p >= 1 keeps everything.
  """
  order = jnp.argsort(-logits, axis=-1)  # [..., V] best first
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
  mass_above = jnp.cumsum(probs, axis=-1) - probs  # mass ranked higher
  keep_sorted = mass_above < p
  keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)  # undo the sort
  return jnp.where(keep | (p >= 1.0), logits, -jnp.inf)


def decodable_ids(model, num_tokens: int | None) -> int | None:
  """How many ids a decoder may emit: those below num_tokens (the tokenizer's vocabulary) and
  never the model's padded ids (ModelConfig.vocab_multiple); None = every id of the logits.

  The model gives padded ids a very low logit, but a high temperature would lift it to a
  probability; a model.vocab_size larger than the tokenizer's has real ids it cannot decode.
  """
  cfg = getattr(model, 'cfg', None)
  if cfg is not None and cfg.padded_vocab_size > cfg.vocab_size:
    num_tokens = cfg.vocab_size if num_tokens is None else min(num_tokens, cfg.vocab_size)
  return None if num_tokens is None else int(num_tokens)


def only_ids_below(logits, num_tokens: int | None, fill=-jnp.inf):
  """logits [..., V] with every id >= num_tokens set to `fill` (None keeps them all)."""
  if num_tokens is None or num_tokens >= logits.shape[-1]:
    return logits
  return jnp.where(jnp.arange(logits.shape[-1]) < num_tokens, logits, fill)


def sample_logits(logits, key, *, temperature, top_k=0, top_p=1.0, num_tokens=None):
  """logits [B, V] -> tokens int32[B]. temperature 0 is greedy (argmax).

  num_tokens: only ids below it are ever chosen (a vocabulary padded past the tokenizer's).
  PAD_ID is never chosen: a model may give it some probability (an imported GPT-2's added
  padding row, or a model that has not learnt yet that padding is never a next token).

  temperature, top_k and top_p may be traced scalars: one compiled loop serves all settings.
  Each filter sits behind a `lax.cond`: at small model sizes the sorts behind top-k and top-p
  cost more than the model step, so greedy decoding and unfiltered sampling skip them.
  """

  logits = only_ids_below(logits, num_tokens)
  logits = jnp.where(jnp.arange(logits.shape[-1]) == PAD_ID, -jnp.inf, logits)

  def greedy(logits):
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def sample(logits):
    scaled = logits.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1.0)
    scaled = lax.cond(top_k > 0, lambda x: top_k_filter(x, top_k), lambda x: x, scaled)
    scaled = lax.cond(top_p < 1.0, lambda x: top_p_filter(x, top_p), lambda x: x, scaled)
    return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)

  return lax.cond(temperature > 0, sample, greedy, logits)
