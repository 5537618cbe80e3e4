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
  """Rate of update `count` (0 = the first): linear warmup to `learning_rate`, then cosine to
  `min_lr_ratio`, rsqrt, or constant.

  Warmup counts from 1, as in t5x: update k gets the warmup rate at step k + 1, so the first
  update moves the weights and update warmup_steps - 1 is the first at the peak.
  """
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
  joined = optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])
  return lambda count: joined(count + 1)


def group_schedules(config, params) -> dict[str, optax.Schedule]:
  """The rate each parameter group gets at update `count`, before plateau scaling.

  {'head': ...} alone covers every parameter unless fine-tuning splits the tree; then
  'backbone' gets `backbone_lr_multiplier` times the rate, 0 for the first `head_only_steps`
  updates, and 0 throughout with `freeze_backbone`.
  """
  schedule = learning_rate_schedule(config)
  fine_tuning = 'backbone' in params and (
    config.freeze_backbone or config.backbone_lr_multiplier != 1.0 or config.head_only_steps
  )
  if not fine_tuning:
    return {'head': schedule}
  scale, delay = float(config.backbone_lr_multiplier), int(config.head_only_steps)
  if config.freeze_backbone:
    backbone = lambda count: jnp.zeros((), jnp.float32)  # noqa: E731
  else:
    backbone = lambda count: jnp.where(count < delay, 0.0, scale * schedule(count))  # noqa: E731
  return {'head': schedule, 'backbone': backbone}


def plateau_scale(opt_state) -> jax.Array:
  """The factor reduce_on_plateau applies to every update now (1 without it)."""
  nodes = [n for n in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(n)]
  return nodes[0].scale if nodes else jnp.ones((), jnp.float32)


def applied_learning_rates(config, params):
  """`rates(count, opt_state) -> {'lr': ..., 'lr_backbone': ...}`: what update `count` applies.

  'lr' is the head's rate (every parameter's, unless fine-tuning splits the tree), 'lr_backbone'
  the backbone's when it has its own group; both include the plateau scale in `opt_state`.
  """
  groups = group_schedules(config, params)

  def rates(count, opt_state) -> dict:
    scale = plateau_scale(opt_state)
    return {
      ('lr' if name == 'head' else f'lr_{name}'): scale * fn(count) for name, fn in groups.items()
    }

  return rates


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

  def labelled(tree, label):
    return jax.tree.map(lambda _: label, tree)

  return {k: labelled(v, 'backbone' if k == 'backbone' else 'head') for k, v in params.items()}


def trainable_mask(config, params) -> Any | None:
  """A tree like params, True where the parameter trains; None when every parameter does.

  Frozen: the backbone under `freeze_backbone`, and everything but the adapters and the head when
  the model has LoRA factors (the optimizer discards those updates: make_optimizer). The train
  step stops their gradients, so the backward pass never computes them.
  """
  if lora.has_factors(params):
    return jax.tree.map(lambda label: label == 'trainable', lora.trainable_labels(params))
  if config.freeze_backbone and 'backbone' in params:
    return jax.tree.map(lambda label: label == 'head', backbone_labels(params))
  return None


def make_optimizer(config, params: Any) -> optax.GradientTransformation:
  """clip_by_global_norm -> adamw (masked decay) -> optional plateau scaling, per the config.

  Fine-tuning options split the tree with `optax.multi_transform`: the backbone is frozen, or
  gets `backbone_lr_multiplier` times the learning rate (and nothing for `head_only_steps`).
  A frozen backbone's gradients are not part of the clipped global norm: only the head's are.
  A model with LoRA adapters trains only them and the head (clip -> adamw on those alone).
  """
  groups = group_schedules(config, params)

  def adamw(lr):
    return optax.adamw(
      lr,
      b1=config.adam_b1,
      b2=config.adam_b2,
      eps=1e-8,
      weight_decay=config.weight_decay,
      mask=lambda p: weight_decay_mask(p, config.decay_embeddings),
    )

  clip = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm else []
  # A tree of labels, not the labelling function: sharding.optimizer_state_shardings runs
  # tx.init on placeholder leaves (optax.tree_map_params), which a function cannot label.
  labels = backbone_labels(params)
  parts = []
  if lora.has_factors(params):
    # Only the adapters and the head learn. Clipping sits inside their branch: the frozen
    # weights' gradients must not count in the norm.
    train = optax.chain(*clip, adamw(groups['head']))
    parts.append(
      optax.multi_transform(
        {'trainable': train, 'frozen': optax.set_to_zero()}, lora.trainable_labels(params)
      )
    )
  elif 'backbone' not in groups:
    parts += clip + [adamw(groups['head'])]
  elif config.freeze_backbone:
    head = optax.chain(*clip, adamw(groups['head']))
    parts.append(optax.multi_transform({'backbone': optax.set_to_zero(), 'head': head}, labels))
  else:
    core = {'backbone': adamw(groups['backbone']), 'head': adamw(groups['head'])}
    parts += clip + [optax.multi_transform(core, labels)]
  if config.reduce_on_plateau:
    parts.append(_scale_by_plateau())
  return optax.chain(*parts)


# ----------------------------------------------------------------------------- reduce on plateau
# optax's reduce_on_plateau both advances its state and scales updates in one call. Here the
# train step only scales (the state stays put), and `after_evaluation` advances the state with the
# monitored validation value, so patience counts evaluations, as configs/default.py documents.
_PlateauState = optax.contrib.ReduceLROnPlateauState


def _is_plateau(node) -> bool:
  return isinstance(node, _PlateauState)


def _reduce_on_plateau() -> optax.GradientTransformationExtraArgs:
  return optax.contrib.reduce_on_plateau(factor=0.5, patience=2)


def _scale_by_plateau() -> optax.GradientTransformation:
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: state.scale * u, updates), state

  return optax.GradientTransformation(_reduce_on_plateau().init, update)


def after_evaluation(opt_state, value: float):
  """`opt_state` with reduce_on_plateau told of one evaluation that scored `value` (lower is
  better): two evaluations in a row without a better value halve the learning rate."""

  def advance(node):
    if not _is_plateau(node):
      return node
    return _reduce_on_plateau().update(None, node, value=value)[1]

  return jax.tree.map(advance, opt_state, is_leaf=_is_plateau)
