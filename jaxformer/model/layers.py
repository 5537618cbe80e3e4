"""Building blocks: projections with named axes, norms, embeddings, positions, feed-forward.

Every parameter is created through `nn.with_logical_partitioning`, so it carries logical axis
names ('embed', 'heads', 'kv', 'mlp', 'vocab', ...). `jaxformer.sharding` maps those names to
mesh axes with one small table; nothing here knows about devices.

Shapes: B = batch, L = length, D = d_model (logical 'embed'), H = heads, K = head_dim ('kv'),
F = d_ff ('mlp'), V = vocab.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.config import ModelConfig
from jaxformer.model import lora

# GPT-2 / nanoGPT initialisation: N(0, 0.02) everywhere, and the projections that write into
# the residual stream scaled by 1/sqrt(2 * num_layers) so the stream's variance does not grow
# with depth.
INIT_STD = 0.02


def residual_init_std(num_layers: int) -> float:
  return INIT_STD / math.sqrt(2 * num_layers)


def partitioned(init, axes):
  return nn.with_logical_partitioning(init, axes)


def zero_padded(init, size: int, axis: int):
  """`init` for the first `size` entries of `axis`, zeros past them (the padded vocabulary).

  The real entries are drawn exactly as an unpadded table's would be, so a padded model starts
  from the same function; the padded ones never receive a gradient and stay zero.
  """

  def init_fn(key, shape, dtype=jnp.float32):
    real_shape = list(shape)
    real_shape[axis] = size
    pad = [(0, 0)] * len(shape)
    pad[axis] = (0, shape[axis] - size)
    return jnp.pad(init(key, tuple(real_shape), dtype), pad)

  return init_fn


class Projection(nn.Module):
  """A learned linear map: x's trailing axes contracted with the kernel's leading ones, + bias.

  x: [*lead, *kernel_shape[:-out_rank]] -> [*lead, *kernel_shape[-out_rank:]].
  The kernel keeps heads as their own axis instead of a flat [D, H*K] matrix, e.g.
  q/k/v: [D, H, K] with axes ('embed', 'heads', 'kv'); attention output: [H, K, D]. That
  lets the rule 'heads' -> 'model' split heads across devices (Megatron-style). The bias
  covers the last `out_rank` kernel axes. `bias_scale` multiplies the bias (head masking).
  lora_rank > 0 adds a low-rank update (jaxformer.model.lora).
  """

  kernel_shape: tuple[int, ...]
  kernel_axes: tuple[str, ...]
  out_rank: int = 1
  use_bias: bool = True
  stddev: float = INIT_STD
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  lora_rank: int = 0
  lora_alpha: float = 1.0
  kernel_init: Callable | None = None  # None: normal(stddev)

  @nn.compact
  def __call__(self, x, bias_scale=None):
    init = self.kernel_init or nn.initializers.normal(self.stddev)
    kernel = self.param(
      'kernel',
      partitioned(init, self.kernel_axes),
      self.kernel_shape,
      self.param_dtype,
    )
    # The contraction is one [rows, n_in] @ [n_in, n_out] matmul. Written that way (not
    # jnp.einsum), the backward pass is also plain 2-D matmuls; with einsum, XLA:CPU left the
    # weight gradients as transposed-operand dots outside its fast matmul library (3-4x slower).
    n_in = len(self.kernel_shape) - self.out_rank
    in_shape, out_shape = self.kernel_shape[:n_in], self.kernel_shape[n_in:]
    lead = x.shape[: x.ndim - n_in]
    x2 = x.astype(self.dtype).reshape((-1, math.prod(in_shape)))
    w2 = kernel.astype(self.dtype).reshape((math.prod(in_shape), math.prod(out_shape)))
    y2 = x2 @ w2
    if self.lora_rank:
      y2 = y2 + lora.low_rank_update(
        self, x2, in_shape, out_shape, self.kernel_axes, self.lora_rank, self.lora_alpha
      )
    y = y2.reshape(lead + out_shape)
    if self.use_bias:
      bias_axes, bias_shape = (
        self.kernel_axes[-self.out_rank :],
        self.kernel_shape[-self.out_rank :],
      )
      bias = self.param(
        'bias', partitioned(nn.initializers.zeros, bias_axes), bias_shape, self.param_dtype
      ).astype(self.dtype)
      y = y + (bias if bias_scale is None else bias * bias_scale)
    return y


class Dropout(nn.Module):
  """Inverted dropout, drop probability `rate`, drawing from the 'dropout' rng stream.

  Same contract as nn.Dropout, with 4x fewer random-number evaluations: flax draws a 32-bit
  uniform per element, and partitionable threefry spends a full threefry2x32 (64 random bits)
  on each. Here one threefry2x32 output is split into four 16-bit draws, and an element is
  kept when its draw is >= round(rate * 2^16): the rate is exact to 1.6e-5. On CPU this cut the
  dropout share of a GPT-2 train step from ~15% to ~4%. Shapes whose last axis is not a
  multiple of 4 fall back to one 32-bit draw per element.
  """

  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    if deterministic or self.rate == 0.0:
      return x
    return _masked_dropout(*self._keep_mask(x.shape))(x)

  def split(self, shapes, deterministic: bool = True):
    """Functions x -> dropout(x) for arrays [*lead, m_i, n_i] (same lead axes), from one draw.

    Statistically the same as one call per array, but XLA compiles one random-number
    generator instead of one per array: on CPU each threefry site costs seconds of compile
    time (four attention blocks per layer, each with its own draw, doubled the compile time
    of a small model with attention dropout). The draw is [*lead, sum_i m_i n_i], so the lead
    axes (batch, heads) keep their sharding.
    """
    lead = tuple(shapes[0][:-2])
    if any(tuple(shape[:-2]) != lead for shape in shapes):
      raise ValueError(
        f'Dropout.split needs shapes that differ only in their last two axes, got {shapes}'
      )
    if deterministic or self.rate == 0.0:
      return [_masked_dropout(None, 1.0) for _ in shapes]
    sizes = [shape[-2] * shape[-1] for shape in shapes]
    keep, keep_prob = self._keep_mask(lead + (sum(sizes),))
    starts = np.cumsum([0] + sizes)
    return [
      _masked_dropout(keep[..., start : start + size].reshape(shape), keep_prob)
      for start, size, shape in zip(starts, sizes, shapes)
    ]

  def _keep_mask(self, shape):
    """(keep [shape] bool, keep probability)."""
    key = self.make_rng('dropout')
    if shape and shape[-1] % 4 == 0 and str(jax.random.key_impl(key)) == 'threefry2x32':
      threshold = round(self.rate * 2**16)
      return _uint16_draws(key, shape) >= jnp.uint16(threshold), 1.0 - threshold / 2**16
    keep_prob = 1.0 - self.rate
    return jax.random.bernoulli(key, keep_prob, shape), keep_prob


def _masked_dropout(keep, keep_prob: float):
  """The function x -> x / keep_prob where keep, else 0; keep=None gives the identity."""

  def apply(x):
    if keep is None:
      return x
    return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros((), x.dtype))

  return apply


def _uint16_draws(key, shape):
  """uint16 random draws of `shape` (last axis a multiple of 4), 4 per threefry2x32 call.

  Counters are the flat index of each group of 4, as in jax's partitionable threefry, so the
  draws do not depend on how the array is sharded.
  """
  groups = shape[:-1] + (shape[-1] // 4,)
  counts = jnp.arange(math.prod(groups), dtype=jnp.uint32).reshape(groups)
  k1, k2 = jax.random.key_data(key)
  hi, lo = _threefry2x32(k1, k2, jnp.zeros_like(counts), counts)
  halves = [jax.lax.bitcast_convert_type(b, jnp.uint16) for b in (hi, lo)]  # groups + [2]
  return jnp.concatenate(halves, axis=-1).reshape(shape)


def _threefry2x32(k1, k2, x0, x1):
  """Threefry-2x32 (Salmon et al. 2011, 20 rounds) of the counter pairs (x0, x1) under key
  (k1, k2): bit for bit what jax's threefry2x32_p computes.

  Written out in jnp so that XLA fuses all rounds into one elementwise kernel: on CPU, jax
  lowers threefry2x32_p as a rolled loop whose every iteration reads and writes the whole
  counter arrays (docs/performance.md measures the difference).
  """
  rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
  keys = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  x0, x1 = x0 + keys[0], x1 + keys[1]
  for i in range(5):
    for r in rotations[i % 2]:
      x0 = x0 + x1
      x1 = ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))) ^ x0
    x0 = x0 + keys[(i + 1) % 3]
    x1 = x1 + keys[(i + 2) % 3] + jnp.uint32(i + 1)
  return x0, x1


def layer_norm(cfg: ModelConfig, name: str) -> nn.LayerNorm:
  # LayerNorm computes its statistics in float32 even when dtype is bfloat16.
  return nn.LayerNorm(
    epsilon=cfg.layer_norm_epsilon,
    use_bias=cfg.use_bias,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.params_dtype,
    name=name,
    scale_init=partitioned(nn.initializers.ones, ('embed',)),
    bias_init=partitioned(nn.initializers.zeros, ('embed',)),
  )


def token_embedding(cfg: ModelConfig, name: str = 'token_embed') -> nn.Embed:
  """Token table [padded V, D]; its `.attend(x)` is the tied output projection x @ table.T."""
  init = zero_padded(nn.initializers.normal(INIT_STD), cfg.vocab_size, axis=0)
  return nn.Embed(
    cfg.padded_vocab_size,
    cfg.d_model,
    dtype=cfg.compute_dtype,
    param_dtype=cfg.params_dtype,
    embedding_init=partitioned(init, ('vocab', 'embed')),
    name=name,
  )


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
  """The fixed positions of Vaswani et al. (2017): sin on even, cos on odd features.
  [length, dim]."""
  pos = np.arange(length)[:, None]
  inv_freq = np.exp(-math.log(10000.0) * np.arange(0, dim, 2) / dim)
  table = np.zeros((length, dim), np.float32)
  table[:, 0::2] = np.sin(pos * inv_freq)
  table[:, 1::2] = np.cos(pos * inv_freq)[:, : dim // 2]
  return table


class AddPositions(nn.Module):
  """x + position_table[positions] for 'learned'/'sinusoidal'.

  x: [B, L, D], positions: [L] or [B, L].
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, positions):
    cfg = self.cfg
    if cfg.position == 'learned':
      table = self.param(
        'embedding',
        partitioned(nn.initializers.normal(INIT_STD), ('length', 'embed')),
        (cfg.max_len, cfg.d_model),
        cfg.params_dtype,
      )
    else:
      table = jnp.asarray(sinusoidal_table(cfg.max_len, cfg.d_model))
    added = jnp.take(table, positions, axis=0).astype(x.dtype)
    return x + (added[None] if positions.ndim == 1 else added)


def apply_rope(x, positions, base: float = 10000.0):
  """Rotary position embedding (Su et al. 2021), rotate-half.

  x: [B, L, H, K], positions: [L] | [B, L].

  Pairs of features (i, i + K/2) are rotated by angle position * base^(-2i/K), so the dot
  product q.k depends only on the distance between the two positions.
  """
  half = x.shape[-1] // 2
  inv_freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [L, K/2] or [B, L, K/2]
  angles = angles[None] if angles.ndim == 2 else angles
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class FeedForward(nn.Module):
  """d_model -> d_ff -> activation -> d_model. x: [B, L, D] -> [B, L, D].

  'swiglu' (Shazeer 2020) uses two input projections: act = silu(x W_gate) * (x W_up).
  num_layers: depth of the layer stack this belongs to, which scales the init of the output
  projection (it writes into the residual stream); None means cfg.num_layers.
  """

  cfg: ModelConfig
  num_layers: int | None = None

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    d, f = cfg.d_model, cfg.ff_dim

    def proj(name, shape, axes, std=INIT_STD):
      return Projection(
        shape,
        axes,
        use_bias=cfg.use_bias,
        stddev=std,
        dtype=cfg.compute_dtype,
        param_dtype=cfg.params_dtype,
        name=name,
        **lora.projection_kwargs(cfg, name),
      )

    if cfg.activation == 'swiglu':
      h = nn.silu(proj('wi_gate', (d, f), ('embed', 'mlp'))(x)) * proj(
        'wi_up', (d, f), ('embed', 'mlp')
      )(x)
    else:
      h = proj('wi', (d, f), ('embed', 'mlp'))(x)
      h = nn.gelu(h) if cfg.activation == 'gelu' else nn.relu(h)
    h = nn.with_logical_constraint(h, ('batch', 'length', 'mlp'))
    return proj(
      'wo', (f, d), ('mlp', 'embed'), residual_init_std(max(self.num_layers or cfg.num_layers, 1))
    )(h)
