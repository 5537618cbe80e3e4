"""LoRA (Hu et al. 2021): a frozen projection W plus a trainable low-rank update, W + s A B.

    y = x W + s (x A) B        A: [*in, r]  B: [r, *out]  s = lora_alpha / lora_rank

A projection named in ModelConfig.lora_targets (with lora_rank > 0) owns 'lora_a' and 'lora_b'
next to its 'kernel'. B starts at zero, so an adapted model starts equal to its base. A takes
the logical axes of the kernel's input side and B those of its output side, so the factors are
sharded like the kernel they adapt (the rank axis is never split).

Training freezes everything except the factors and the task head ('head' of a Classifier,
'lm_head' of an untied DecoderLM): `trainable_labels` labels the tree for optax, `merge`
folds the factors into the kernels and returns an ordinary parameter tree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.config import ModelConfig

FACTORS = ('lora_a', 'lora_b')
HEADS = ('head', 'lm_head')  # trained in full alongside the factors


def projection_kwargs(cfg: ModelConfig, name: str) -> dict:
  """Projection keyword arguments that give the projection `name` its adapters, if targeted."""
  if cfg.lora_rank and name in cfg.lora_target_names:
    return {'lora_rank': cfg.lora_rank, 'lora_alpha': float(cfg.lora_alpha)}
  return {}


def low_rank_update(module: nn.Module, x2, in_shape, out_shape, kernel_axes, rank, alpha):
  """s (x A) B for a projection's flattened input x2 [rows, prod(in)] -> [rows, prod(out)].

  Creates the module's 'lora_a' [*in, r] and 'lora_b' [r, *out] parameters.
  """
  n_in = len(in_shape)
  fan_in = math.prod(in_shape)
  a = module.param(
    'lora_a',
    nn.with_logical_partitioning(
      nn.initializers.normal(1.0 / math.sqrt(fan_in)), tuple(kernel_axes[:n_in]) + (None,)
    ),
    tuple(in_shape) + (rank,),
    module.param_dtype,
  )
  b = module.param(
    'lora_b',
    nn.with_logical_partitioning(nn.initializers.zeros, (None,) + tuple(kernel_axes[n_in:])),
    (rank,) + tuple(out_shape),
    module.param_dtype,
  )
  a2 = a.astype(module.dtype).reshape((fan_in, rank))
  b2 = b.astype(module.dtype).reshape((rank, math.prod(out_shape)))
  return (x2 @ a2) @ b2 * jnp.asarray(alpha / rank, module.dtype)


def is_factor(path) -> bool:
  return any(_name(k) in FACTORS for k in path)


def trainable_labels(params):
  """'trainable' for LoRA factors and the head, 'frozen' for the rest (a tree like params)."""

  def label(path, _):
    top = _name(path[0]) if path else ''
    return 'trainable' if is_factor(path) or top in HEADS else 'frozen'

  return jax.tree_util.tree_map_with_path(label, params)


def has_factors(params) -> bool:
  return any(is_factor(path) for path, _ in jax.tree_util.tree_leaves_with_path(params))


def without_factors(params):
  """params with every 'lora_a' / 'lora_b' entry removed."""
  if not isinstance(params, Mapping):
    return params
  return {k: without_factors(v) for k, v in params.items() if k not in FACTORS}


def only_factors(params):
  """The 'lora_a' / 'lora_b' entries of params (and the dicts that lead to them)."""
  if not isinstance(params, Mapping):
    return None
  out = {}
  for k, v in params.items():
    if k in FACTORS:
      out[k] = v
    else:
      sub = only_factors(v)
      if sub:
        out[k] = sub
  return out


def with_factors(params, factors):
  """params with the entries of `factors` (from only_factors) put back."""
  out = dict(params)
  for k, v in factors.items():
    out[k] = v if k in FACTORS else with_factors(out.get(k, {}), v)
  return out


def merge(params, cfg: ModelConfig):
  """Folds every adapter into its kernel: kernel + s A B; returns (params, cfg without LoRA).

  Works on both layer layouts: under nn.scan every leaf has a leading [num_layers] axis.
  """
  scale = float(cfg.lora_alpha) / max(cfg.lora_rank, 1)

  def fold(tree):
    if not isinstance(tree, Mapping):
      return tree
    if 'lora_a' in tree:
      kernel, a, b = tree['kernel'], jnp.asarray(tree['lora_a']), jnp.asarray(tree['lora_b'])
      lead = a.ndim + b.ndim - kernel.ndim - 2  # 1 under nn.scan, else 0
      rank = a.shape[-1]
      a2 = a.reshape(a.shape[:lead] + (-1, rank)).astype(jnp.float32)
      b2 = b.reshape(b.shape[:lead] + (rank, -1)).astype(jnp.float32)
      delta = (scale * (a2 @ b2)).reshape(kernel.shape)
      merged = (jnp.asarray(kernel, jnp.float32) + delta).astype(jnp.asarray(kernel).dtype)
      rest = {k: v for k, v in tree.items() if k not in FACTORS + ('kernel',)}
      return {'kernel': merged, **rest}
    return {k: fold(v) for k, v in tree.items()}

  return fold(params), cfg.replace(lora_rank=0)


def _name(key) -> str:
  return str(getattr(key, 'key', getattr(key, 'name', key)))
