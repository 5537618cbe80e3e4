"""The KV caches, one decoding step with them, and the argument checks every decoder shares.

A cache is the model's flax 'cache' collection: the keys/values of the tokens seen so far
([batch, length, heads, head_dim] per layer, placed by the axis names the model gives them), plus
the cross-attention keys/values of the source for an encoder-decoder. The checks run outside
jit, so a bad argument is one clear line for the user.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer import sharding as jf_sharding


def _abstract_cache(init_fn):
  """Shapes of the 'cache' collection that init_fn creates, without running it: nn.Partitioned
  leaves that carry each axis's logical name ('batch', 'length', 'heads', 'kv')."""
  return jax.eval_shape(init_fn)


def _empty(abstract_cache):
  """An all-zeros cache, placed by its axis names under the current mesh (sharding.py)."""
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), nn.unbox(abstract_cache))
  return jf_sharding.constrain_to_names(zeros, abstract_cache)


def lm_cache(model, batch: int, length: int):
  """An empty KV cache for `batch` rows of up to `length` tokens (index 0, all zeros)."""

  def init():
    return model.init(jax.random.key(0), jnp.zeros((batch, length), jnp.int32), decode=True)[
      'cache'
    ]

  return _empty(_abstract_cache(init))


def decoder_cache_shapes(model, encoded, src, length: int):
  def init():
    tgt = jnp.zeros((src.shape[0], length), jnp.int32)
    return model.init(jax.random.key(0), encoded, src, tgt, decode=True, method='decode')['cache']

  return _abstract_cache(init)


def empty_decoder_cache(model, encoded, src, length: int):
  """An all-zeros decoder cache for an encoder-decoder: encoded [B, S, D], src [B, S]."""
  return _empty(decoder_cache_shapes(model, encoded, src, length))


def decoder_cache(model, params, encoded, src, length: int):
  """The decoder cache to translate src [B, S] (encoded [B, S, D]) into up to `length` tokens.

  Self-attention keys/values start empty; the cross-attention keys/values of `encoded` are
  computed here, once, by a decode call with no target tokens. The decoding steps then pass
  encoded=None and read them from the cache.
  """
  cache = empty_decoder_cache(model, encoded, src, length)
  no_tokens = jnp.zeros((src.shape[0], 0), jnp.int32)
  return decoder_step(model, params, cache, encoded, src, no_tokens)[1]


def leaf_name(path) -> str:
  """The variable name at the end of a cache leaf's tree path, e.g. 'cross_key'."""
  last = path[-1]
  return str(getattr(last, 'key', getattr(last, 'name', last)))


def lm_step(model, params, cache, tokens):
  """tokens [B, n] written at the cache index -> (logits [B, n, V], new cache)."""
  logits, mutated = model.apply(
    {'params': params, 'cache': cache}, tokens, decode=True, mutable=['cache']
  )
  return logits, mutated['cache']


def decoder_step(model, params, cache, encoded, src, tokens):
  """tokens [B, n] -> (logits [B, n, V], new cache). encoded: the encoder output [B, S, D], or
  None to use the cross-attention keys/values already in the cache."""
  logits, mutated = model.apply(
    {'params': params, 'cache': cache},
    encoded,
    src,
    tokens,
    decode=True,
    mutable=['cache'],
    method='decode',
  )
  return logits, mutated['cache']


def is_eos(tokens, eos_id):
  return tokens == eos_id  # eos_id -1 (no EOS) matches nothing


# ----- argument checks (outside jit: one clear line for the user) ------------------------


def model_max_len(model) -> int | None:
  cfg = getattr(model, 'cfg', None)
  return getattr(cfg, 'max_len', None)


def check_sampling(temperature, top_k, top_p):
  if not 0 <= temperature < float('inf'):  # NaN fails this too
    raise ValueError(f'temperature must be a finite number >= 0 (0 = greedy), got {temperature}')
  if top_k < 0:
    raise ValueError(f'top_k must be >= 0 (0 = off), got {top_k}')
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f'top_p must be in (0, 1] (1 = off), got {top_p}')


def check_prompt(model, prompt, max_new_tokens: int):
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f'prompt must be int32[batch, length >= 1], got shape {prompt.shape}')
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
  limit = model_max_len(model)
  total = prompt.shape[1] + max_new_tokens
  if limit is not None and total > limit:
    raise ValueError(
      f'prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} = {total} exceeds '
      f"the model's max_len={limit}; shorten the prompt or ask for fewer tokens"
    )


def check_translate(model, src, max_len: int):
  if src.ndim != 2 or src.shape[1] < 1:
    raise ValueError(f'src must be int32[batch, length >= 1], got shape {src.shape}')
  limit = model_max_len(model)
  if max_len < 1 or (limit is not None and max_len > limit):
    raise ValueError(f'max_len={max_len} must be in [1, model max_len={limit}]')
