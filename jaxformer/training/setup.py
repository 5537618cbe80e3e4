"""Checks a run before anything is compiled or written, and resolves what the config leaves open.

Everything here is cheap: a bad config must fail in well under 10 seconds, with one line that
names the field, and leave the workdir untouched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import ml_collections

from jaxformer.config import ModelConfig
from jaxformer.training.errors import ConfigError

log = logging.getLogger(__name__)

TASKS = ('lm', 'translate', 'classify')
# Changing these between a run and its resume would load a different model or data: refused.
_SHAPE_KEYS = ('task', 'model', 'num_classes', 'pooling')
_DATA_KEYS = ('name', 'tokenizer', 'vocab_size')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Validates the training fields (ModelConfig validates the model's own)."""

  def need(ok: bool, msg: str):
    if not ok:
      raise ConfigError(msg)

  need(config.task in TASKS, f'task must be one of {TASKS}, got {config.task!r}')
  for key in (
    'batch_size',
    'num_train_steps',
    'eval_every_steps',
    'log_every_steps',
    'checkpoint_every_steps',
    'grad_accum_steps',
    'keep_last',
  ):
    need(int(config[key]) > 0, f'{key} must be > 0, got {config[key]}')
  for key in ('eval_steps', 'warmup_steps', 'head_only_steps', 'num_classes'):
    need(int(config[key]) >= 0, f'{key} must be >= 0, got {config[key]}')
  need(config.learning_rate > 0, f'learning_rate must be > 0, got {config.learning_rate}')
  need(config.weight_decay >= 0, f'weight_decay must be >= 0, got {config.weight_decay}')
  need(
    0 <= config.label_smoothing < 1,
    f'label_smoothing must be in [0, 1), got {config.label_smoothing}',
  )
  need(
    config.lr_schedule in ('cosine', 'rsqrt', 'constant'),
    f"lr_schedule must be 'cosine', 'rsqrt' or 'constant', got {config.lr_schedule!r}",
  )
  need(
    config.parallelism in ('mesh', 'pmap'),
    f"parallelism must be 'mesh' or 'pmap', got {config.parallelism!r}",
  )
  need(
    config.pooling in ('mean', 'last'), f"pooling must be 'mean' or 'last', got {config.pooling!r}"
  )
  need(config.early_stopping.patience >= 0, 'early_stopping.patience must be >= 0')
  need(config.early_stopping.min_delta >= 0, 'early_stopping.min_delta must be >= 0')
  need(
    config.early_stopping.get('monitor', 'loss') in ('loss', 'error'),
    f"early_stopping.monitor must be 'loss' or 'error', got {config.early_stopping.get('monitor')!r}",
  )
  need(
    config.batch_size % config.grad_accum_steps == 0,
    f'batch_size {config.batch_size} must be divisible by grad_accum_steps {config.grad_accum_steps}',
  )
  need(config.backbone_lr_multiplier >= 0, 'backbone_lr_multiplier must be >= 0')
  if config.model.vocab_size:
    model_config(config, config.model.vocab_size)  # validate the model fields early
  if config.model.remat != 'none' and not config.model.scan_layers:
    # Measured on XLA:CPU (docs/performance.md): the step's temporary memory is the same with and
    # without remat, because XLA schedules the recomputation early. Under nn.scan it cannot.
    log.warning(
      'model.remat=%r with scan_layers=False saves no memory on XLA:CPU (the recomputation '
      'is scheduled early); set model.scan_layers=True to trade compute for memory',
      config.model.remat,
    )


def model_config(config, vocab_size: int) -> ModelConfig:
  """The ModelConfig of this run, with the vocabulary from the tokenizer and the platform dtype."""
  fields = dict(config.model.to_dict())
  fields['vocab_size'] = int(config.model.vocab_size or vocab_size)
  try:
    return ModelConfig.from_dict(fields)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'model: {e}') from None


def check_batch_split(config) -> None:
  """Batch against hosts and micro-batches (the runtime checks it against the mesh)."""
  per_process = config.batch_size // jax.process_count()
  if config.batch_size % jax.process_count() or per_process % config.grad_accum_steps:
    raise ConfigError(
      f'batch_size {config.batch_size} must split evenly over '
      f'{jax.process_count()} processes and grad_accum_steps'
    )


def saved_config(workdir: str) -> dict | None:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError:
      raise ConfigError(f'{path} is not valid JSON: fix it, or use a new --workdir') from None


def resume_changes(old: dict, new: dict) -> list[str]:
  """Safe differences between a saved run config and the new one; raises on unsafe ones."""
  for key in _SHAPE_KEYS:
    if old.get(key) != new.get(key):
      raise ConfigError(
        f"workdir holds a run with a different '{key}' ({_short(old.get(key))} vs "
        f'{_short(new.get(key))}); use a new --workdir or --config.overwrite=true'
      )
  for key in _DATA_KEYS:
    if old.get('dataset', {}).get(key) != new.get('dataset', {}).get(key):
      raise ConfigError(
        f'workdir holds a run with a different dataset.{key}; use a new --workdir '
        'or --config.overwrite=true'
      )
  # The saved best value and the checkpoints' ranking are in the old monitor's units.
  old_monitor = old.get('early_stopping', {}).get('monitor', 'loss')
  if old_monitor != new.get('early_stopping', {}).get('monitor', 'loss'):
    raise ConfigError(
      f'workdir holds a run that monitored validation {old_monitor}; early_stopping.monitor '
      'cannot change on resume: use a new --workdir or --config.overwrite=true'
    )
  return [
    f'{k}: {old.get(k)!r} -> {new.get(k)!r}'
    for k in sorted(new)
    if k not in _SHAPE_KEYS and k not in ('dataset', 'overwrite') and old.get(k) != new.get(k)
  ]


def _short(value: Any) -> str:
  text = json.dumps(value, sort_keys=True, default=str)
  return text if len(text) < 80 else text[:77] + '...'


def resolved_dict(config, cfg: ModelConfig) -> dict:
  d = config.to_dict()
  d['model'] = dataclasses.asdict(cfg)
  d['mesh_shape'] = list(d['mesh_shape'])
  return json.loads(json.dumps(d, default=str))
