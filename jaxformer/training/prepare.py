"""prepare: everything a run needs before its first step, checked before anything is written.

`prepare(config, workdir)` checks the config, builds the data, the model, the optimizer and the
runtime, and describes the train state abstractly (shapes, dtypes, shardings), so a bad config
fails in seconds and leaves the workdir untouched. `compiled_steps` then gives the run's jitted
train and eval steps, placed by its runtime. training/loop.py drives them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxformer import data as data_lib
from jaxformer import models
from jaxformer import sharding as jf_sharding
from jaxformer.training import budget, optim, setup, steps
from jaxformer.training.errors import ConfigError
from jaxformer.training.optim import make_optimizer
from jaxformer.training.runtime import MeshRuntime, PmapRuntime, check_model_fits, make_runtime
from jaxformer.training.writers import write_json_atomic


def _log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, flush=True)


@dataclasses.dataclass
class PreparedRun:
  """Everything decided before the first step."""

  config: Any
  workdir: str
  data: Any
  model: Any
  model_cfg: Any
  runtime: MeshRuntime | PmapRuntime
  tx: Any
  shardings: dict  # NamedSharding per state leaf
  abstract_state: dict  # ShapeDtypeStructs with shardings: the restore target
  resolved: dict  # the config as written to config.json
  make_state: Callable  # (init_key, dropout_key) -> fresh train state
  boxed_params: Any  # abstract params with their logical axis names


def prepare(config, workdir: str) -> PreparedRun:
  """Checks, data, model, optimizer. Raises ConfigError / DataError; writes nothing to workdir."""
  setup.check_config(config)
  setup.check_batch_split(config)
  runtime = make_runtime(config)
  budget.check(config)
  setup.check_workdir(config, workdir)
  # overwrite=true replaces the run whatever its config.json holds, so it is not even read.
  saved = None if config.overwrite else setup.saved_config(workdir)
  config, budget_record = budget.resumed(config, saved)
  tokenizer = _reused_tokenizer(config, workdir, saved)
  resuming = saved is not None and not config.overwrite
  if resuming:
    setup.keep_saved_layout(config, saved)
  data = data_lib.build_task_data(
    config.dataset,
    task=config.task,
    max_len=int(config.model.max_len),
    batch_size=int(config.batch_size),
    seed=int(config.seed),
    tokenizer=tokenizer,
    split_record=data_lib.load_split_record(workdir) if resuming else None,
  )
  # A files source names its own splits (no test split unless files or a fraction give one).
  config.dataset.eval_split, config.dataset.test_split = data.splits['eval'], data.splits['test']
  # Data errors that would otherwise surface at the first step or evaluation, before any write.
  data.train_dataset()
  data.eval_batches(config.dataset.eval_split)
  if config.dataset.test_split:
    data.eval_batches(config.dataset.test_split)
  cfg = setup.model_config(config, data.tokenizer.vocab_size)
  if cfg.vocab_size < data.tokenizer.vocab_size:
    raise ConfigError(
      f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's "
      f'{data.tokenizer.vocab_size}: token ids past it have no embedding; set model.vocab_size=0 '
      "to take the tokenizer's"
    )
  num_classes = int(config.num_classes or getattr(data, 'num_classes', 0) or 0)
  if config.task == 'classify' and num_classes < 2:
    raise ConfigError('num_classes must be >= 2 for classification (set config.num_classes)')
  check_model_fits(runtime, cfg)

  model = models.build_model(config.task, cfg, num_classes, config.pooling)
  resolved = setup.resolved_dict(config, cfg)
  resolved['num_classes'] = num_classes
  if budget_record:
    resolved[budget.RECORD_KEY] = budget_record
  if saved is not None and not config.overwrite:
    for change in setup.resume_changes(saved, resolved):
      _log(f'resume: config change allowed: {change}')

  dummy = models.init_inputs(config.task, cfg)
  init_params = lambda key: model.init({'params': key}, *dummy, deterministic=True)['params']  # noqa: E731
  boxed = jax.eval_shape(init_params, jax.random.key(0))
  tx = make_optimizer(config, nn.unbox(boxed))

  def make_state(init_key, dropout_key):
    params = nn.unbox(init_params(init_key))
    return {
      'step': jnp.zeros((), jnp.int32),
      'params': params,
      'opt_state': tx.init(params),
      'rng': dropout_key,
    }

  abstract = jax.eval_shape(make_state, jax.random.key(0), jax.random.key(1))
  shardings = runtime.state_shardings(tx, boxed, abstract)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  setup.check_state_memory(abstract)
  return PreparedRun(
    config, workdir, data, model, cfg, runtime, tx, shardings, abstract, resolved, make_state, boxed
  )


def compiled_steps(s: PreparedRun):
  """(train_step, eval_step) of this run, placed by its runtime (traced under its mesh)."""
  config, rt = s.config, s.runtime
  train_step = rt.compile_train(
    steps.make_train_step(
      s.model,
      s.tx,
      task=config.task,
      grad_accum_steps=config.grad_accum_steps,
      label_smoothing=config.label_smoothing,
      axis_name=rt.axis_name,
      learning_rates=optim.applied_learning_rates(config, nn.unbox(s.boxed_params)),
      trainable=optim.trainable_mask(config, nn.unbox(s.boxed_params)),
    ),
    s.shardings,
  )
  eval_step = rt.compile_eval(
    steps.make_eval_step(s.model, task=config.task, axis_name=rt.axis_name), s.shardings['params']
  )
  return train_step, eval_step


def _reused_tokenizer(config, workdir, saved):
  """A resumed run keeps its tokenizer; a fine-tuned one takes its pretrained run's."""
  for base in ([workdir] if saved is not None and not config.overwrite else []) + (
    [config.init_from] if config.init_from else []
  ):
    directory = os.path.join(base, 'tokenizer')
    if os.path.isdir(directory):
      return data_lib.load_tokenizer(directory)
  if config.init_from and not os.path.exists(config.init_from):
    raise ConfigError(
      f'init_from={config.init_from!r} does not exist: train that run first '
      '(e.g. python train.py) or point init_from at an export'
    )
  return None


def write_run_files(s: PreparedRun) -> None:
  """config.json, the data files a resume needs, the tokenizer and partitioning.json."""
  workdir = s.workdir
  write_json_atomic(os.path.join(workdir, 'config.json'), s.resolved)
  data_lib.save_run_data_files(workdir, s.data)
  tok_dir = os.path.join(workdir, 'tokenizer')
  if not os.path.isdir(tok_dir):
    s.data.tokenizer.save(tok_dir)
  report = jf_sharding.partitioning_report(s.boxed_params, s.runtime.mesh, s.runtime.rules)
  write_json_atomic(os.path.join(workdir, 'partitioning.json'), report)
