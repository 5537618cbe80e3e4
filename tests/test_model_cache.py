"""KV-cache decoding equals the full forward pass: token by token, and prefill + continue."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_fixtures import KEY, random_params, tiny, tokens  # noqa: E402

from jaxformer.models import DecoderLM, EncoderDecoder


def empty_cache(model, *args):
  """The flax-convention cache (init with decode=True), built as zeros without compiling init."""
  abstract = nn.unbox(
    jax.eval_shape(functools.partial(model.init, decode=True), KEY, *args)['cache']
  )
  return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract)


def close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


LM_CONFIGS = [
  dict(position='learned', norm='post', tie_embeddings=False),  # scan, fused attention
  dict(position='rope', scan_layers=False, attention_impl='einsum', activation='swiglu'),
]


@pytest.mark.parametrize('overrides', LM_CONFIGS, ids=lambda d: d['position'])
def test_decoder_lm_cache_matches_full_forward(overrides):
  lm = DecoderLM(tiny(**overrides))
  x = tokens((2, 8))
  params = random_params(lm, x)
  full = jax.jit(lm.apply)({'params': params}, x)  # [B, 8, V]
  step = jax.jit(functools.partial(lm.apply, decode=True, mutable=['cache']))
  cache0 = empty_cache(lm, jnp.zeros((2, lm.cfg.max_len), jnp.int32))  # room for max_len tokens

  # Token by token.
  cache, outs = cache0, []
  for t in range(8):
    logits, mut = step({'params': params, 'cache': cache}, x[:, t : t + 1])
    cache = mut['cache']
    outs.append(logits)
  close(jnp.concatenate(outs, axis=1), full)

  # Prefill a 3-token prompt in one call, then continue one token at a time.
  logits, mut = step({'params': params, 'cache': cache0}, x[:, :3])
  outs, cache = [logits], mut['cache']
  for t in range(3, 8):
    logits, mut = step({'params': params, 'cache': cache}, x[:, t : t + 1])
    cache = mut['cache']
    outs.append(logits)
  close(jnp.concatenate(outs, axis=1), full)


def test_encoder_decoder_cache_matches_full_forward():
  ed = EncoderDecoder(tiny(position='rope'))
  src = tokens((2, 6)).at[1, 4:].set(0)  # a padded source
  tgt = tokens((2, 7), seed=2)
  params = random_params(ed, src, tgt)
  full = jax.jit(ed.apply)({'params': params}, src, tgt)
  encoded = jax.jit(functools.partial(ed.apply, method=EncoderDecoder.encode))(
    {'params': params}, src
  )
  step = jax.jit(
    functools.partial(ed.apply, decode=True, mutable=['cache'], method=EncoderDecoder.decode)
  )
  cache0 = empty_cache(ed, src, jnp.zeros((2, ed.cfg.max_len), jnp.int32))
  assert 'decoder' in cache0 and 'encoder' not in cache0  # only the decoder self-attention caches

  for prompt in (1, 4):  # token by token; prefill 4 then continue
    logits, mut = step({'params': params, 'cache': cache0}, encoded, src, tgt[:, :prompt])
    outs, cache = [logits], mut['cache']
    for t in range(prompt, 7):
      logits, mut = step({'params': params, 'cache': cache}, encoded, src, tgt[:, t : t + 1])
      cache = mut['cache']
      outs.append(logits)
    close(jnp.concatenate(outs, axis=1), full)


def test_cache_index_advances_by_chunk_length():
  lm = DecoderLM(tiny())
  x = tokens((1, 5))
  params = random_params(lm, x)
  cache = empty_cache(lm, jnp.zeros((1, 16), jnp.int32))
  _, mut = jax.jit(functools.partial(lm.apply, decode=True, mutable=['cache']))(
    {'params': params, 'cache': cache}, x
  )
  assert int(mut['cache']['backbone']['index']) == 5
  keys = mut['cache']['backbone']['layers']['layer']['self_attention'][
    'cached_key'
  ]  # [layers, B, 16, H, K]
  assert keys.shape == (2, 1, 16, 4, 4)
  assert np.abs(np.asarray(keys[:, :, :5])).min() > 0 and np.all(np.asarray(keys[:, :, 5:]) == 0)
