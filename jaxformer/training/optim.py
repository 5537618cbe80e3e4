"""The optimizer: clip -> AdamW with decoupled, masked weight decay, on a warmup schedule.

Weight decay follows nanoGPT's rule: decay matrices (ndim >= 2), never biases or norm scales.
Embedding tables are excluded by default because decaying rare tokens' rows towards zero
hurts them more than it regularizes (config `decay_embeddings` turns it on).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxformer.model import lora

_EMBEDDING_NAMES = ('embed', 'embedding', 'pos_embedding', 'position_embedding')


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warmup to `learning_rate`, then cosine to `min_lr_ratio`, rsqrt, or constant."""
  peak, warmup = float(config.learning_rate), int(config.warmup_steps)
  kind = config.lr_schedule
  if kind == 'cosine':
    decay_steps = max(int(config.num_train_steps) - warmup, 1)
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.min_lr_ratio)
  elif kind == 'constant':
    decay = optax.constant_schedule(peak)
  elif kind == 'rsqrt':
    # The 2017 paper's schedule: lr ~ 1/sqrt(step) after warmup (here `s` counts from warmup's end).
    w = max(warmup, 1)
    decay = lambda s: peak * jnp.sqrt(w / (jnp.asarray(s, jnp.float32) + w))  # noqa: E731
  else:
    raise ValueError(f"lr_schedule must be 'cosine', 'rsqrt' or 'constant', got {kind!r}")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _path_names(path) -> list[str]:
  return [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]


def weight_decay_mask(params, decay_embeddings: bool = False):
  """True where weight decay applies: kernels (ndim >= 2), optionally embedding tables."""

  def decide(path, leaf):
    names = _path_names(path)
    is_embedding = any(n in _EMBEDDING_NAMES for n in names)
    if is_embedding:
      return bool(decay_embeddings)
    # Scanned layers carry a leading `layers` axis, so a bias there is 2-D: look at the name.
    if names and names[-1] in ('bias', 'scale'):
      return False
    return leaf.ndim >= 2

  return jax.tree_util.tree_map_with_path(decide, params)


def backbone_labels(params):
  """'backbone' for parameters under the pretrained backbone, 'head' for everything else."""
  return {
    k: jax.tree.map(lambda _: 'backbone' if k == 'backbone' else 'head', v)
    for k, v in params.items()
  }


def make_optimizer(config, params: Any) -> optax.GradientTransformation:
  """clip_by_global_norm -> adamw (masked decay) -> optional plateau scaling, per the config.

  Fine-tuning options split the tree with `optax.multi_transform`: the backbone is frozen, or
  gets `backbone_lr_multiplier` times the learning rate (and nothing for `head_only_steps`).
  A model with LoRA adapters trains only them and the head (clip -> adamw on those alone).
  """
  schedule = learning_rate_schedule(config)

  def adamw(lr_scale: float = 1.0, delay: int = 0):
    lr = schedule
    if lr_scale != 1.0 or delay:
      lr = lambda step: jnp.where(step < delay, 0.0, lr_scale * schedule(step))  # noqa: E731
    return optax.adamw(
      lr,
      b1=config.adam_b1,
      b2=config.adam_b2,
      eps=1e-8,
      weight_decay=config.weight_decay,
      mask=lambda p: weight_decay_mask(p, config.decay_embeddings),
    )

  clip = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm else []
  fine_tuning = 'backbone' in params and (
    config.freeze_backbone or config.backbone_lr_multiplier != 1.0 or config.head_only_steps
  )
  if lora.has_factors(params):
    # Only the adapters and the head learn. Clipping sits inside their branch: the frozen
    # weights' gradients must not count in the norm.
    train = optax.chain(*clip, adamw())
    core = optax.multi_transform(
      {'trainable': train, 'frozen': optax.set_to_zero()}, lora.trainable_labels
    )
    clip = []
  elif fine_tuning:
    backbone = (
      optax.set_to_zero()
      if config.freeze_backbone
      else adamw(config.backbone_lr_multiplier, int(config.head_only_steps))
    )
    core = optax.multi_transform({'backbone': backbone, 'head': adamw()}, backbone_labels)
  else:
    core = adamw()
  parts = [*clip, core]
  if config.reduce_on_plateau:
    # Halves the update scale when the loss stops improving.
    # It sees the training loss (passed as `value=`), averaged over one evaluation interval.
    parts.append(
      optax.contrib.reduce_on_plateau(
        factor=0.5, patience=2, accumulation_size=max(int(config.eval_every_steps), 1)
      )
    )
  return optax.chain(*parts)
