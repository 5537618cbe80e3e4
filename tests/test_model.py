"""Model behaviour: shapes, causality, padding, dropout, scan/loop/remat equivalence, heads.

Speed: XLA compiles random-number code slowly on CPU, so tests fill parameters with numpy
(`random_params`, shapes from jax.eval_shape) and jit each (model, options) once (`jitted`).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_fixtures import KEY, random_params, tiny, tokens  # noqa: E402

from jaxformer.model import loop_to_scan, scan_to_loop
from jaxformer.model.attention import (
  MIN_BLOCKED_LENGTH,
  attention_mask,
  causal_block_attention,
  einsum_attention,
)
from jaxformer.model.layers import Dropout
from jaxformer.models import Classifier, DecoderLM, EncoderDecoder


@functools.cache
def jitted(model, **static):
  """jit(model.apply) with static keyword options, compiled once per (model, options)."""
  return jax.jit(functools.partial(model.apply, **static))


def close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


def differ(a, b, by=1e-4):
  return float(np.abs(np.asarray(a) - np.asarray(b)).max()) > by


# ----- shapes -----


@pytest.mark.parametrize('scan', [True, False])
def test_output_shapes_and_dtypes(scan):
  cfg = tiny(scan_layers=scan, dtype='bfloat16')
  x, y = tokens((2, 8)), tokens((2, 5), seed=2)
  lm = DecoderLM(cfg)
  # The real initialiser runs once; other shapes come from tracing (jax.eval_shape), which
  # checks the same code without paying for XLA compilation.
  init = jax.jit(lm.init) if scan else functools.partial(jax.eval_shape, lm.init)
  v = nn.unbox(init(KEY, x))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v))  # param_dtype stays float32
  layers = v['params']['backbone']['layers']
  kernel = (
    layers['layer']['self_attention']['query']['kernel']
    if scan
    else layers['layer_0']['self_attention']['query']['kernel']
  )
  assert kernel.shape == (
    (2, 16, 4, 4) if scan else (16, 4, 4)
  )  # [layers?, embed, heads, head_dim]
  outputs = [
    (lm, (x,), (2, 8, 32)),
    (EncoderDecoder(cfg), (x, y), (2, 5, 32)),
    (Classifier(cfg, num_classes=3, pooling='last'), (x,), (2, 3)),
  ]
  for model, args, shape in outputs:
    out = jax.eval_shape(model.apply, {'params': random_params(model, *args)}, *args)
    assert out.shape == shape and out.dtype == jnp.float32


# ----- causality and padding -----


@pytest.mark.parametrize('position', ['sinusoidal', 'rope'])
def test_decoder_lm_is_causal(position):
  lm = DecoderLM(tiny(position=position))
  x = tokens((2, 10))
  v = {'params': random_params(lm, x)}
  base = jitted(lm)(v, x)
  for j in (0, 4, 9):
    changed = jitted(lm)(v, x.at[:, j].set((x[:, j] % 31) + 1))
    close(changed[:, :j], base[:, :j])
    assert differ(changed[:, j], base[:, j])  # position j itself does change


def test_encoder_decoder_target_is_causal():
  ed = EncoderDecoder(tiny())
  src, tgt = tokens((2, 7)), tokens((2, 6), seed=3)
  v = {'params': random_params(ed, src, tgt)}
  base = jitted(ed)(v, src, tgt)
  changed = jitted(ed)(v, src, tgt.at[:, 3].set((tgt[:, 3] % 31) + 1))
  close(changed[:, :3], base[:, :3])
  assert differ(changed[:, 3:], base[:, 3:])


def test_padding_never_changes_real_positions():
  cfg = tiny()
  src = tokens((2, 6)).at[1, 4:].set(0)  # second row already has padding
  src_padded = jnp.pad(src, ((0, 0), (0, 5)))  # 5 more pads at the end
  tgt = tokens((2, 5), seed=3)
  ed = EncoderDecoder(cfg)
  v = {'params': random_params(ed, src, tgt)}
  # Encoder self-attention and cross-attention both ignore source pads (the encoder alone is
  # also checked below through the bidirectional classifier backbone).
  close(jitted(ed)(v, src_padded, tgt), jitted(ed)(v, src, tgt))
  # The masks really act: the same extra positions holding real ids do change the output.
  assert differ(jitted(ed)(v, src_padded.at[:, 6:].set(5), tgt), jitted(ed)(v, src, tgt))

  # A bidirectional stack on its own: the encoder-backbone classifier with mean pooling.
  x = tokens((2, 6))
  x_padded = jnp.pad(x, ((0, 0), (0, 4)))
  clf = Classifier(cfg, num_classes=3, pooling='mean', backbone_kind='encoder')
  v = {'params': random_params(clf, x)}
  close(jitted(clf)(v, x_padded), jitted(clf)(v, x))
  assert differ(jitted(clf)(v, x_padded.at[:, 7].set(3)), jitted(clf)(v, x))


def test_causal_models_ignore_right_padding():
  cfg = tiny()
  x = tokens((2, 6)).at[1, 4:].set(0)
  x_padded = jnp.pad(x, ((0, 0), (0, 4)))
  lm = DecoderLM(cfg)
  v = {'params': random_params(lm, x)}
  close(jitted(lm)(v, x_padded)[:, :6], jitted(lm)(v, x))
  # 'last' pooling reads the last non-pad token, wherever the padding starts.
  clf = Classifier(cfg, num_classes=3, pooling='last')
  v = {'params': random_params(clf, x)}
  out = jitted(clf)(v, x_padded)
  close(out, jitted(clf)(v, x))
  assert differ(out, jitted(clf)(v, x_padded.at[1, 3].set(7)))


# ----- dropout -----


def test_dropout_is_driven_only_by_the_dropout_key():
  cfg = tiny(dropout_rate=0.2, attention_dropout_rate=0.2)
  lm = DecoderLM(cfg)
  x = tokens((2, 8))
  v = {'params': random_params(lm, x)}
  run = jitted(lm, deterministic=False)
  a, b, c = (run(v, x, rngs={'dropout': jax.random.key(s)}) for s in (1, 1, 2))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same key: bit-identical
  assert differ(a, c, 1e-3)  # different key: different masks
  det = jitted(lm)(v, x)
  assert differ(a, det, 1e-3)  # dropout really was on
  no_dropout = DecoderLM(cfg.replace(dropout_rate=0.0, attention_dropout_rate=0.0))
  close(det, jitted(no_dropout, deterministic=False)(v, x, rngs={'dropout': jax.random.key(1)}))
  only_attention = jitted(DecoderLM(cfg.replace(dropout_rate=0.0)), deterministic=False)
  assert differ(
    only_attention(v, x, rngs={'dropout': jax.random.key(1)}),
    only_attention(v, x, rngs={'dropout': jax.random.key(2)}),
  )


def test_dropout_keeps_at_its_rate_and_split_masks_are_independent():
  drop = Dropout(0.1)
  y = np.asarray(drop.apply({}, jnp.ones((64, 256)), deterministic=False, rngs={'dropout': KEY}))
  kept = y != 0
  assert abs(kept.mean() - 0.9) < 0.01  # 16,384 draws: sd of the rate 0.0023
  np.testing.assert_allclose(y[kept], 1 / (1 - round(0.1 * 2**16) / 2**16), rtol=1e-6)
  # split: masks for several shapes cut from one draw; each at the rate, and not repeats
  fns = drop.apply(
    {}, [(32, 256), (32, 256), (8, 12)], deterministic=False, rngs={'dropout': KEY}, method='split'
  )
  a, b, c = (
    np.asarray(f(jnp.ones(shape))) != 0 for f, shape in zip(fns, [(32, 256), (32, 256), (8, 12)])
  )
  assert c.shape == (8, 12)
  assert abs(a.mean() - 0.9) < 0.015 and abs(b.mean() - 0.9) < 0.015
  assert 0.75 < (a == b).mean() < 0.9  # independent masks agree on ~0.82 of entries
  assert all(np.all(f(jnp.ones((2, 4))) == 1) for f in drop.apply({}, [(2, 4)], method='split'))
  with pytest.raises(ValueError, match='last two axes'):
    drop.apply({}, [(2, 3, 4), (3, 3, 4)], method='split')


def test_dropout_threefry_gives_jaxs_bits_bit_for_bit():
  """Dropout's own threefry2x32 (fused by XLA into one kernel) equals jax's primitive, so the
  masks - and with them every run's numbers, across meshes and on resume - are unchanged."""
  import jax.extend.random

  from jaxformer.model.layers import _threefry2x32

  k1, k2 = jax.random.key_data(jax.random.key(7))
  rng = np.random.default_rng(0)
  x0, x1 = (jnp.asarray(rng.integers(0, 2**32, (3, 1000), dtype=np.uint32)) for _ in range(2))
  ours = jax.jit(_threefry2x32)(k1, k2, x0, x1)
  theirs = jax.jit(jax.extend.random.threefry2x32_p.bind)(k1, k2, x0, x1)
  for a, b in zip(ours, theirs):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dropout_in_encoder_decoder():
  cfg = tiny(dropout_rate=0.3)
  x, y = tokens((2, 6)), tokens((2, 5), seed=2)
  model = EncoderDecoder(cfg)
  v = {'params': random_params(model, x, y)}
  run = jitted(model, deterministic=False)
  a, b = (
    run(v, x, y, rngs={'dropout': jax.random.key(1)}),
    run(v, x, y, rngs={'dropout': jax.random.key(1)}),
  )
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert differ(a, run(v, x, y, rngs={'dropout': jax.random.key(2)}))


# ----- scan vs loop vs remat -----


@functools.cache
def loss_and_grads(model):
  """jit((params, tokens) -> ((loss, logits), grads))."""

  def loss(params, *args):
    logits = model.apply({'params': params}, *args)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 1]), logits

  return jax.jit(jax.value_and_grad(loss, has_aux=True))


GRAD_CFG = tiny(
  activation='swiglu', position='rope'
)  # shared so compiled grad functions are reused


def test_scan_and_loop_give_identical_outputs_and_grads():
  cfg = GRAD_CFG
  x = tokens((2, 8))
  scanned, looped = DecoderLM(cfg), DecoderLM(cfg.replace(scan_layers=False))
  p_scan = random_params(scanned, x)
  p_loop = scan_to_loop(p_scan)
  assert jax.tree.structure(p_loop) == jax.tree.structure(
    nn.unbox(jax.eval_shape(looped.init, KEY, x)['params'])
  )
  jax.tree.map(np.testing.assert_array_equal, loop_to_scan(p_loop), p_scan)
  (loss_s, logits_s), g_s = loss_and_grads(scanned)(p_scan, x)
  (loss_l, logits_l), g_l = loss_and_grads(looped)(p_loop, x)
  close(logits_s, logits_l)
  close(loss_s, loss_l)
  jax.tree.map(close, scan_to_loop(g_s), g_l)


def test_scan_and_loop_encoder_decoder_match():
  cfg = tiny(norm='post', use_bias=False)
  x, y = tokens((2, 8)), tokens((2, 5), seed=2)
  scanned, looped = EncoderDecoder(cfg), EncoderDecoder(cfg.replace(scan_layers=False))
  p_scan = random_params(scanned, x, y)
  close(
    jitted(scanned)({'params': p_scan}, x, y),
    jitted(looped)({'params': scan_to_loop(p_scan)}, x, y),
  )


@pytest.mark.parametrize('remat,scan', [('full', True), ('dots', False)])
def test_remat_changes_neither_values_nor_grads(remat, scan):
  cfg = GRAD_CFG.replace(scan_layers=scan)
  x = tokens((2, 8))
  plain = DecoderLM(cfg)
  p = random_params(plain, x)
  (loss_a, logits_a), g_a = loss_and_grads(plain)(p, x)
  (loss_b, logits_b), g_b = loss_and_grads(DecoderLM(cfg.replace(remat=remat)))(p, x)
  close(logits_a, logits_b)
  jax.tree.map(close, g_a, g_b)
  assert (
    float(jnp.abs(g_a['backbone']['token_embed']['embedding']).max()) > 0
  )  # grads are not trivially 0


def _step_temp_bytes(cfg, x):
  """Bytes of temporaries XLA plans for one forward+backward: what remat is meant to shrink."""
  model = DecoderLM(cfg)
  return (
    loss_and_grads(model)
    .lower(random_params(model, x), x)
    .compile()
    .memory_analysis()
    .temp_size_in_bytes
  )


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_remat_with_scan_shrinks_the_backward_pass_memory():
  """Under scan, remat='full' stores one residual per layer instead of every activation. (In a
  Python loop XLA:CPU hoists the recomputation and nothing is saved: setup warns about that.)"""
  cfg = tiny(num_layers=6, d_model=64, max_len=64, dropout_rate=0.0)
  x = tokens((8, 64))
  plain, remat = _step_temp_bytes(cfg, x), _step_temp_bytes(cfg.replace(remat='full'), x)
  assert remat < 0.5 * plain, (remat, plain)


# ----- heads: masking and attention maps -----


@pytest.mark.parametrize('scan', [True, False])
def test_head_mask_zero_for_a_layer_removes_its_attention(scan):
  lm = DecoderLM(tiny(scan_layers=scan, norm='post'))
  x = tokens((2, 8))
  p = random_params(lm, x)  # non-zero biases: removing the sublayer != zeroing its kernel
  mask = jnp.ones((2, 4)).at[1].set(0.0)
  run = jitted(lm)
  masked = run({'params': p}, x, head_mask=mask)
  p_loop = scan_to_loop(p) if scan else jax.tree.map(lambda a: a, p)
  out = p_loop['backbone']['layers']['layer_1']['self_attention']['out']
  out['kernel'], out['bias'] = jnp.zeros_like(out['kernel']), jnp.zeros_like(out['bias'])
  removed = loop_to_scan(p_loop) if scan else p_loop
  close(masked, run({'params': removed}, x, head_mask=jnp.ones((2, 4))))
  unmasked = run({'params': p}, x, head_mask=jnp.ones((2, 4)))
  if scan:  # all-ones mask == no mask
    close(unmasked, run({'params': p}, x))
  assert differ(run({'params': p}, x, head_mask=jnp.ones((2, 4)).at[0, 2].set(0.0)), unmasked)
  with pytest.raises(
    ValueError, match=r'head_mask has shape \(4,\); expected \[num_layers, num_heads\]'
  ):
    jax.eval_shape(lm.apply, {'params': p}, x, head_mask=jnp.ones(4))


@pytest.mark.parametrize('scan', [True, False])
def test_attention_weights_capture(scan):
  cfg = tiny(scan_layers=scan, attention_impl='einsum', position='rope')
  lm = DecoderLM(cfg)
  x = tokens((2, 8))
  v = {'params': random_params(lm, x)}
  logits, state = jitted(lm, mutable=('intermediates',))(v, x)
  close(
    logits, jitted(DecoderLM(cfg.replace(attention_impl='xla')))(v, x)
  )  # capture changes nothing
  maps = jax.tree.leaves(
    state['intermediates']
  )  # scan: one [layers, ...] array; loop: one per layer
  probs = np.asarray(maps[0]) if scan else np.stack([np.asarray(m) for m in maps])
  assert probs.shape == (2, 2, 4, 8, 8)  # [layers, B, H, Lq, Lk]
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  upper = np.triu(np.ones((8, 8), bool), k=1)
  assert np.all(probs[..., upper] == 0.0) and np.all(probs[..., ~upper] > 0.0)

  if not scan:
    return
  ed = EncoderDecoder(cfg)
  src = tokens((2, 6)).at[0, 4:].set(0)
  v = {'params': random_params(ed, src, x)}
  _, state = jitted(ed, mutable=('intermediates',))(v, src, x)
  layers = state['intermediates']['decoder']['layers']
  cross = np.asarray(jax.tree.leaves(layers['layer']['cross_attention'])[0])  # [layers, B, H, T, S]
  assert np.all(cross[:, 0, :, :, 4:] == 0.0) and np.all(cross[:, 1] > 0.0)  # padded keys get none


def test_causal_block_attention_equals_the_full_square():
  class NoDropout:
    def __call__(self, x, deterministic):
      return x

    def split(self, shapes, deterministic):
      return [lambda x: x] * len(shapes)

  no_dropout = NoDropout()
  # 10 positions: uneven blocks (3, 2, 3, 2); 3 positions: fewer positions than blocks.
  for length in (10, 3):
    q, k, v = (jax.random.normal(key, (2, length, 2, 4)) for key in jax.random.split(KEY, 3))
    key_valid = jnp.ones((2, length), bool).at[1, -1].set(False)
    mask = attention_mask(length, length, key_valid=key_valid, causal=True)
    full, _ = einsum_attention(q, k, v, mask, dropout=no_dropout, deterministic=True)
    close(causal_block_attention(q, k, v, mask, dropout=no_dropout, deterministic=True), full)
  # On CPU, attention_impl='auto' runs the blocks for a decoder: same logits as XLA's kernel.
  cfg = tiny(scan_layers=False, max_len=MIN_BLOCKED_LENGTH)
  x = tokens((2, MIN_BLOCKED_LENGTH))
  v = {'params': random_params(DecoderLM(cfg), x)}
  close(jitted(DecoderLM(cfg))(v, x), jitted(DecoderLM(cfg.replace(attention_impl='xla')))(v, x))


def test_residual_init_scales_with_each_stacks_own_depth():
  # The projections that write into the residual stream start at N(0, 0.02 / sqrt(2 * depth)),
  # where depth is the stack's own: num_encoder_layers / num_decoder_layers, not num_layers.
  cfg = tiny(d_model=64, num_layers=1, num_encoder_layers=2, num_decoder_layers=8)
  cfg = cfg.replace(scan_layers=True)
  x = tokens((1, 4))
  params = nn.unbox(jax.jit(EncoderDecoder(cfg).init)(KEY, x, x)['params'])
  for stack, depth, sublayers in (
    ('encoder', 2, ['self_attention']),
    ('decoder', 8, ['self_attention', 'cross_attention']),
  ):
    layer = params[stack]['layers']['layer']
    kernels = [layer[name]['out']['kernel'] for name in sublayers] + [layer['mlp']['wo']['kernel']]
    for kernel in kernels:  # 8k-33k draws each: the sample std is within ~1% of the true one
      np.testing.assert_allclose(np.std(kernel), 0.02 / np.sqrt(2 * depth), rtol=0.05)
