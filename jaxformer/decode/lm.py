"""Sampling from a language model with the KV cache (`generate`), and the slow reference that
recomputes the whole prefix at every step (`generate_recompute`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxformer.decode.cache import check_prompt, check_sampling, is_eos, lm_cache, lm_step
from jaxformer.decode.sampling import decodable_ids, sample_logits


def generate(
  model,
  params,
  prompt,
  *,
  max_new_tokens: int,
  rng,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None = None,
  prompt_lengths=None,
  num_tokens: int | None = None,
):
  """Continues each prompt row with `max_new_tokens` tokens. prompt int32[B, P] -> int32[B, P + N].

  prompt_lengths: int[B], the length of each row's prompt when they differ; the rows are then
  right-padded to P (any pad value). Row r of the output is its prompt, then its N new tokens,
  then zeros. Without prompt_lengths every row's prompt is all P tokens. After a row emits
  `eos_id` (kept in the output) the rest of that row is 0. num_tokens: sample only ids below
  it, i.e. ids the tokenizer can decode when the model's vocabulary is larger.
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  check_sampling(temperature, top_k, top_p)
  check_prompt(model, prompt, max_new_tokens)
  lengths = _check_prompt_lengths(prompt, prompt_lengths)
  return _generate(
    model,
    params,
    prompt,
    jnp.asarray(lengths, jnp.int32),
    rng,
    prefill=int(lengths.min()),
    max_new_tokens=int(max_new_tokens),
    temperature=float(temperature),
    top_k=int(top_k),
    top_p=float(top_p),
    eos_id=-1 if eos_id is None else int(eos_id),
    num_tokens=decodable_ids(model, num_tokens),
  )


def _check_prompt_lengths(prompt, prompt_lengths) -> np.ndarray:
  batch, width = prompt.shape
  if prompt_lengths is None:
    return np.full((batch,), width, np.int32)
  lengths = np.asarray(prompt_lengths)
  if lengths.shape != (batch,) or not np.issubdtype(lengths.dtype, np.integer):
    raise ValueError(
      f'prompt_lengths must be int[{batch}] (one length per prompt row), got {lengths!r}'
    )
  if lengths.min() < 1 or lengths.max() > width:
    raise ValueError(f'prompt_lengths must be in [1, {width}] (the prompt width), got {lengths}')
  return lengths.astype(np.int32)


@functools.partial(jax.jit, static_argnames=('model', 'prefill', 'max_new_tokens', 'num_tokens'))
def _generate(
  model,
  params,
  prompt,
  lengths,
  rng,
  *,
  prefill,
  max_new_tokens,
  temperature,
  top_k,
  top_p,
  eos_id,
  num_tokens,
):
  """Prompts of per-row `lengths` [B], right-padded in prompt [B, P]; prefill = min(lengths).

  The first `prefill` columns, prompt for every row, fill the cache in one call. Then each step
  writes column c of every row: the row's prompt token while c < its length (its logits are
  not used), else a sampled token. No row ever caches padding, so positions and causal
  attention are exactly those of the row decoded alone, and nothing needs a padding mask.
  """
  batch, prompt_len = prompt.shape
  total = prompt_len + max_new_tokens
  sample = functools.partial(
    sample_logits, temperature=temperature, top_k=top_k, top_p=top_p, num_tokens=num_tokens
  )

  def write(c, logits, tokens, done):
    """Column c of every row: its prompt token, a sample from logits [B, V], or 0 when done."""
    in_prompt = c < lengths
    # Draw i is the i-th token after the shortest prompt: with equal lengths, the i-th new token.
    drawn = sample(logits, jax.random.fold_in(rng, c - prefill))
    forced = lax.dynamic_index_in_dim(prompt, jnp.minimum(c, prompt_len - 1), 1, keepdims=False)
    new = jnp.where(done, 0, jnp.where(in_prompt, forced, drawn))  # [B]
    tokens = lax.dynamic_update_slice_in_dim(tokens, new[:, None], c, axis=1)
    finished = (~in_prompt & is_eos(new, eos_id)) | (c + 1 >= lengths + max_new_tokens)
    return tokens, done | finished

  # Prefill: the common prompt prefix in one call fills the cache and gives the next logits.
  logits, cache = lm_step(model, params, lm_cache(model, batch, total), prompt[:, :prefill])
  tokens = jnp.zeros((batch, total), jnp.int32).at[:, :prefill].set(prompt[:, :prefill])
  tokens, done = write(prefill, logits[:, -1], tokens, jnp.zeros((batch,), bool))

  def keep_going(state):
    c, _, _, done = state
    return (c < total) & ~jnp.all(done)

  def step(state):
    c, tokens, cache, done = state
    last = lax.dynamic_slice_in_dim(tokens, c - 1, 1, axis=1)  # [B, 1]
    logits, cache = lm_step(model, params, cache, last)  # [B, 1, V]
    tokens, done = write(c, logits[:, 0], tokens, done)
    return c + 1, tokens, cache, done

  state = (jnp.array(prefill + 1, jnp.int32), tokens, cache, done)
  return lax.while_loop(keep_going, step, state)[1]


def generate_recompute(
  model,
  params,
  prompt,
  *,
  max_new_tokens: int,
  rng,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None = None,
):
  """`generate` without a cache: every step runs the model over the whole [B, P + N] buffer.

  Same sampling and the same keys as `generate`, so both give the same tokens; this one
  costs a full forward pass per token. It is the reference for tests and the benchmark.
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  check_sampling(temperature, top_k, top_p)
  check_prompt(model, prompt, max_new_tokens)
  return _generate_recompute(
    model,
    params,
    prompt,
    rng,
    max_new_tokens=int(max_new_tokens),
    temperature=float(temperature),
    top_k=int(top_k),
    top_p=float(top_p),
    eos_id=-1 if eos_id is None else int(eos_id),
    num_tokens=decodable_ids(model, None),
  )


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'num_tokens'))
def _generate_recompute(
  model, params, prompt, rng, *, max_new_tokens, temperature, top_k, top_p, eos_id, num_tokens
):
  batch, prompt_len = prompt.shape
  sample = functools.partial(
    sample_logits, temperature=temperature, top_k=top_k, top_p=top_p, num_tokens=num_tokens
  )
  tokens = jnp.zeros((batch, prompt_len + max_new_tokens), jnp.int32).at[:, :prompt_len].set(prompt)

  def keep_going(state):
    i, _, done = state
    return (i < max_new_tokens) & ~jnp.all(done)

  def step(state):
    i, tokens, done = state
    # Causal attention: the zeros to the right of position P + i - 1 cannot change its logits.
    logits = model.apply({'params': params}, tokens)  # [B, P + N, V]
    last = lax.dynamic_index_in_dim(logits, prompt_len + i - 1, axis=1, keepdims=False)
    new = jnp.where(done, 0, sample(last, jax.random.fold_in(rng, i)))
    tokens = lax.dynamic_update_slice_in_dim(tokens, new[:, None], prompt_len + i, axis=1)
    return i + 1, tokens, done | is_eos(new, eos_id)

  return lax.while_loop(
    keep_going, step, (jnp.array(0, jnp.int32), tokens, jnp.zeros(batch, bool))
  )[1]
