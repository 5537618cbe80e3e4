"""model.dtype='bfloat16' on CPU: which arrays of the train step are bfloat16, and how far its
losses stay from float32's. CI has no accelerator, where dtype='auto' picks bfloat16.

The dtypes are read from the traced program (the jaxpr) and from the lowered StableHLO, what a
TPU or GPU compiler receives, not from the compiled CPU program: XLA:CPU converts bfloat16 dots
to float32 (all 51 dots of this tiny step's optimised CPU HLO are f32[...] = dot(f32, f32)), so
the compiled program here says nothing about what an accelerator multiplies in.
"""

import re

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import equations

from jaxformer import ModelConfig
from jaxformer.model.transformer import DecoderLM
from jaxformer.training.steps import make_train_step

BATCH, LENGTH, VOCAB, HEADS = 2, 16, 64, 4


def setup(dtype: str):
  cfg = ModelConfig(
    vocab_size=VOCAB, d_model=32, num_heads=HEADS, num_layers=2, max_len=LENGTH, dtype=dtype
  )
  model = DecoderLM(cfg)
  tx = optax.adamw(3e-3)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, VOCAB, (BATCH, LENGTH + 1)), jnp.int32)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'weights': jnp.ones((BATCH, LENGTH))}

  def make_state():
    params = nn.unbox(model.init(jax.random.key(0), batch['inputs'])['params'])
    return {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params)}

  state = dict(make_state(), rng=jax.random.key(1))
  return model, make_train_step(model, tx, task='lm'), state, batch


def dtypes(values) -> list[str]:
  return [str(v.aval.dtype) for v in values]


def stablehlo_dots(text: str) -> list[tuple[tuple[int, ...], str, tuple[int, ...], str]]:
  """(lhs shape, lhs dtype, rhs shape, rhs dtype) of every stablehlo.dot_general in `text`."""
  operand = r'tensor<((?:\d+x)*)(\w+)>'
  signature = re.compile(rf'stablehlo\.dot_general .*: \({operand}, {operand}\) ->')
  dots = []
  for line in text.splitlines():
    if 'stablehlo.dot_general' in line:
      found = signature.search(line)
      assert found, line
      lhs, lhs_dtype, rhs, rhs_dtype = found.groups()
      shape = lambda dims: tuple(int(d) for d in dims.split('x') if d)
      dots.append((shape(lhs), lhs_dtype, shape(rhs), rhs_dtype))
  return dots


def test_bfloat16_step_lowers_to_bfloat16_matmuls_in_stablehlo():
  """What an accelerator's compiler receives: the jitted step's StableHLO multiplies bf16 x bf16,
  apart from dot_product_attention's backward pass (float32 probabilities [B, H, Lq, Lk], under
  a head-group axis, times bfloat16 values), at most two such products per layer."""
  model, step, state, batch = setup('bfloat16')
  dots = stablehlo_dots(jax.jit(step).lower(state, batch).as_text())
  assert len(dots) >= 20
  bf16 = [d for d in dots if (d[1], d[3]) == ('bf16', 'bf16')]
  mixed = [d for d in dots if d not in bf16]
  assert len(mixed) <= 2 * model.cfg.num_layers, mixed
  for lhs, lhs_dtype, rhs, rhs_dtype in mixed:
    assert {lhs_dtype, rhs_dtype} == {'f32', 'bf16'}, (lhs, lhs_dtype, rhs, rhs_dtype)
    probabilities = lhs if lhs_dtype == 'f32' else rhs
    assert probabilities[-1] == LENGTH
    assert np.prod(probabilities) == BATCH * HEADS * LENGTH * LENGTH


def test_bfloat16_step_multiplies_in_bfloat16_and_keeps_state_softmax_and_loss_in_float32():
  model, step, state, batch = setup('bfloat16')
  jaxpr = jax.make_jaxpr(step)(state, batch).jaxpr
  eqns = list(equations(jaxpr))
  dots = [e for e in eqns if e.primitive.name == 'dot_general']
  assert len(dots) >= 20
  # Matmuls: projections, output layer and their gradients read bfloat16 operands only. The one
  # exception is jax.nn.dot_product_attention's backward pass, which multiplies the float32
  # attention probabilities [B, H, Lq, Lk] (under a head-group axis) with bfloat16 values.
  for dot in dots:
    assert 'bfloat16' in dtypes(dot.invars), dot
    for operand in dot.invars:
      if str(operand.aval.dtype) == 'float32':
        shape = operand.aval.shape
        assert shape[-1] == LENGTH and np.prod(shape) == BATCH * HEADS * LENGTH * LENGTH, dot
  # At most that backward pass's two products per layer (a layer loop writes every layer out).
  mixed = [d for d in dots if dtypes(d.invars) != ['bfloat16', 'bfloat16']]
  assert len(mixed) <= 2 * model.cfg.num_layers, mixed
  # Activations: the GELU runs on bfloat16.
  gelu = [e for e in eqns if e.primitive.name == 'tanh']
  assert gelu and all(dtypes(e.invars) == ['bfloat16'] for e in gelu)
  # Softmax (attention's over keys, the loss's over the vocabulary) exponentiates float32.
  exps = {e.outvars[0].aval.shape[-1]: dtypes(e.invars) for e in eqns if e.primitive.name == 'exp'}
  assert exps.get(LENGTH) == ['float32'] and exps.get(VOCAB) == ['float32'], exps
  assert all(d == ['float32'] for d in exps.values())
  # Logits leave the model in float32; parameters, Adam's moments and the loss stay float32.
  logits = jax.eval_shape(lambda p: model.apply({'params': p}, batch['inputs']), state['params'])
  assert logits.dtype == jnp.float32
  new_state, metrics = jax.eval_shape(step, state, batch)
  floats = jax.tree.leaves((new_state['params'], new_state['opt_state']))
  assert all(x.dtype == jnp.float32 for x in floats if jnp.issubdtype(x.dtype, jnp.floating))
  assert len(floats) > 3 * len(jax.tree.leaves(state['params']))  # params, mu, nu
  assert metrics['loss_sum'].dtype == jnp.float32 and metrics['grad_norm'].dtype == jnp.float32


@pytest.mark.slow  # two train steps to compile and 60 steps, ~15 s on one core
def test_bfloat16_losses_stay_within_0_01_nats_of_float32():
  """30 steps fitting one batch: the loss falls from 4.18 to 1.70 nats, and bfloat16's curve
  stays within 0.01 nats of float32's at every step (measured: at most 0.0014)."""
  losses = {}
  for dtype in ('float32', 'bfloat16'):
    _, step, state, batch = setup(dtype)
    step = jax.jit(step)
    curve = []
    for _ in range(30):
      state, metrics = step(state, batch)
      curve.append(float(metrics['loss_sum'] / metrics['weight_sum']))
    losses[dtype] = np.array(curve)
  assert losses['float32'][-1] < 0.5 * losses['float32'][0]  # it does learn
  np.testing.assert_allclose(losses['bfloat16'], losses['float32'], atol=0.01)
