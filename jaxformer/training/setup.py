"""Checks a run before anything is compiled or written, and resolves what the config leaves open.

Everything here is cheap: a bad config must fail in well under 10 seconds, with one line that
names the field, and leave the workdir untouched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any

import jax
import ml_collections

from jaxformer.config import (
  MONITORS,
  TASKS,
  ModelConfig,
  early_stopping_monitor,
  recorded_config_problem,
)
from jaxformer.data.inside import read_inside
from jaxformer.training.errors import ConfigError

log = logging.getLogger(__name__)

# Changing these between a run and its resume would load a different model or data: refused.
_SHAPE_KEYS = ('task', 'model', 'num_classes', 'pooling')
# Every dataset field changes the data, except where it lives, whether it may be downloaded and
# which split the final report uses.
_DATASET_FREE_KEYS = ('data_dir', 'download', 'test_split')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Validates the training fields (ModelConfig validates the model's own)."""

  def need(ok: bool, msg: str):
    if not ok:
      raise ConfigError(msg)

  need(config.task in TASKS, f'task must be one of {TASKS}, got {config.task!r}')
  for name, value in _leaves(config.to_dict()):
    need(
      not (isinstance(value, float) and not math.isfinite(value)),
      f'{name} must be a finite number, got {value}',
    )
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
  for key in ('eval_steps', 'warmup_steps', 'head_only_steps', 'num_classes', 'keep_every_steps'):
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
  monitor = early_stopping_monitor(config)
  need(monitor in MONITORS, f'early_stopping.monitor must be one of {MONITORS}, got {monitor!r}')
  need(
    config.batch_size % config.grad_accum_steps == 0,
    f'batch_size {config.batch_size} must be divisible by grad_accum_steps '
    f'{config.grad_accum_steps}',
  )
  need(config.backbone_lr_multiplier >= 0, 'backbone_lr_multiplier must be >= 0')
  lora_rank = (config.get('lora') or {}).get('rank', 0)
  need(
    not lora_rank or (config.backbone_lr_multiplier == 1.0 and not config.head_only_steps),
    'lora.rank > 0 already freezes the backbone (only adapters and head train): '
    'leave backbone_lr_multiplier at 1.0 and head_only_steps at 0',
  )
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


def _leaves(tree: dict, prefix: str = ''):
  """(dotted name, value) of every leaf of a nested dict."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def check_workdir(config, workdir: str) -> None:
  """What a workdir must be before anything is read from it or written to it."""
  here = os.path.realpath(os.getcwd())
  target = os.path.realpath(workdir)
  if config.overwrite and (here == target or here.startswith(target.rstrip(os.sep) + os.sep)):
    raise ConfigError(
      f'--workdir {workdir} with overwrite=true would move the current directory aside: '
      'name the run directory itself, e.g. --workdir=runs/NAME'
    )
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f'--workdir {workdir} is a file, not a directory: pick another --workdir')
  checkpoints = os.path.join(workdir, 'checkpoints')
  has_steps = os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))
  if (
    has_steps and not config.overwrite and not os.path.exists(os.path.join(workdir, 'config.json'))
  ):
    raise ConfigError(
      f'{workdir} holds checkpoints but no config.json, so a resume cannot be checked: '
      'restore config.json, use a new --workdir, or --config.overwrite=true'
    )


def model_config(config, vocab_size: int) -> ModelConfig:
  """The ModelConfig of this run, with the vocabulary from the tokenizer and the platform dtype."""
  fields = dict(config.model.to_dict())
  fields['vocab_size'] = int(config.model.vocab_size or vocab_size)
  lora = config.get('lora') or {}
  for key in ('rank', 'alpha', 'targets'):
    if key in lora:
      fields[f'lora_{key}'] = lora[key]
  try:
    return ModelConfig.from_dict(fields)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'model: {e}') from None


def keep_saved_layout(config, saved: dict | None) -> None:
  """On resume, the layout of the saved run's tables: scan_layers='auto' takes the layer layout it
  recorded, and a run saved before vocabulary padding keeps unpadded tables.

  Its checkpoints hold that layout, and the rule behind 'auto' (jaxformer.config.scan_layers_for)
  may differ in the jaxformer that resumes it: runs saved before 'auto' existed recorded the old
  default, True. An explicit True/False is left alone (resume_changes refuses a change).
  """
  model = (saved or {}).get('model') or {}
  recorded = model.get('scan_layers')
  if config.model.scan_layers == 'auto' and isinstance(recorded, bool):
    config.model.scan_layers = recorded
  # Runs saved before model.vocab_multiple existed have unpadded tables: their checkpoints resume
  # as they are, not under today's training default (128).
  if model and 'vocab_multiple' not in model:
    config.model.vocab_multiple = 1


def check_batch_split(config) -> None:
  """Batch against hosts and micro-batches (the runtime checks it against the mesh)."""
  per_process = config.batch_size // jax.process_count()
  if config.batch_size % jax.process_count() or per_process % config.grad_accum_steps:
    raise ConfigError(
      f'batch_size {config.batch_size} must split evenly over '
      f'{jax.process_count()} processes and grad_accum_steps'
    )


def check_state_memory(abstract_state) -> None:
  """Refuses a train state (params + optimizer state) that cannot fit in device memory.

  abstract_state: ShapeDtypeStructs with shardings. This is a lower bound (activations come
  on top), so it only catches what can never run, e.g. a huge max_len or d_model.
  """
  per_device = sum(
    math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize
    for leaf in jax.tree.leaves(abstract_state)
  )
  device = jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  if stats and stats.get('bytes_limit'):
    limit, where = int(stats['bytes_limit']), f'one {device.platform} device'
  else:  # CPU devices share the host's memory
    limit = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    per_device *= jax.local_device_count()
    where = 'this host'
  if per_device > limit:
    raise ConfigError(
      f'the parameters and optimizer state need {per_device / 2**30:.1f} GiB on {where}, which '
      f'has {limit / 2**30:.1f} GiB: make the model smaller (d_model, num_layers, max_len, '
      'vocab_size) or use more devices'
    )


def saved_config(workdir: str) -> dict | None:
  """The run config a workdir recorded (config.json), None if it has none; checked before use."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.lexists(path):
    return None
  text = read_inside(workdir, 'config.json', 'the workdir')  # a FIFO or a link out: refused
  try:
    saved = json.loads(text)
  except (ValueError, UnicodeDecodeError):
    raise ConfigError(f'{path} is not valid JSON: fix it, or use a new --workdir') from None
  problem = recorded_config_problem(saved)
  if problem is None:
    missing = [key for key in ('model', 'dataset') if key not in saved]
    problem = missing and f'field {missing[0]!r} is missing'
  if problem:
    raise ConfigError(f'{path} is not a run config: {problem}; restore it, or use a new --workdir')
  return saved


def resume_changes(old: dict, new: dict) -> list[str]:
  """Safe differences between a saved run config and the new one; raises on unsafe ones."""
  # A run saved before a field existed ran with that field's default (e.g. model.lora_rank 0,
  # dataset.pack False): a new value for it is a change like any other.
  old = dict(
    old,
    model=_with_model_defaults(old.get('model')),
    dataset=_with_dataset_defaults(old.get('dataset')),
  )
  new = dict(new, dataset=_with_dataset_defaults(new.get('dataset')))
  for key in _SHAPE_KEYS + ('dataset',):
    free = _DATASET_FREE_KEYS if key == 'dataset' else ()
    changed = _differences(old.get(key), new.get(key), key, free)
    if changed:
      raise ConfigError(
        f'workdir holds a run with a different {changed[0]}'
        + (f' (and {len(changed) - 1} more change(s))' if len(changed) > 1 else '')
        + '; use a new --workdir or --config.overwrite=true'
      )
  # The saved best value and the checkpoints' ranking are in the old monitor's units.
  old_monitor = early_stopping_monitor(old)
  if old_monitor != early_stopping_monitor(new):
    raise ConfigError(
      f'workdir holds a run that monitored validation {old_monitor}; early_stopping.monitor '
      'cannot change on resume: use a new --workdir or --config.overwrite=true'
    )
  return [
    f'{k}: {old.get(k)!r} -> {new.get(k)!r}'
    for k in sorted(new)
    if k not in _SHAPE_KEYS and k not in ('dataset', 'overwrite') and old.get(k) != new.get(k)
  ]


def _with_model_defaults(model):
  if not isinstance(model, dict):
    return model
  defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
  return {**defaults, **model}


def _with_dataset_defaults(dataset):
  if not isinstance(dataset, dict):
    return dataset
  from jaxformer.configs import default  # the base training config; imported when needed

  return {**default.get_dataset_config().to_dict(), **dataset}


def _differences(old: Any, new: Any, name: str, free: tuple = ()) -> list[str]:
  """'name.field: old -> new' for every leaf that differs (dicts compared field by field)."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    # The saved run's fields (resume_changes adds the defaults' fields first): a key only the
    # new config has (a user config's own field) is nothing jaxformer reads.
    for key in sorted(old, key=str):
      if key not in free:
        out += _differences(old.get(key), new.get(key), f'{name}.{key}')
    return out
  if old == new:
    return []
  return [f'{name} ({json.dumps(old, default=str)} -> {json.dumps(new, default=str)})']


def resolved_dict(config, cfg: ModelConfig) -> dict:
  d = config.to_dict()
  d['model'] = dataclasses.asdict(cfg)
  d['mesh_shape'] = list(d['mesh_shape'])
  return json.loads(json.dumps(d, default=str))
