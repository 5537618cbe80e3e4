"""Public model API: `from jaxformer.models import DecoderLM, EncoderDecoder, Classifier`.

Also what differs between tasks on the model side: which model a task trains
(`build_model`) and which dummy inputs initialize it (`init_inputs`).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxformer.config import TASKS, ModelConfig
from jaxformer.model import (
  Classifier,
  DecoderLM,
  EncoderDecoder,
  count_params,
  flops_per_token,
  loop_to_scan,
  param_count_formula,
  scan_to_loop,
)

__all__ = [
  'DecoderLM',
  'EncoderDecoder',
  'Classifier',
  'build_model',
  'init_inputs',
  'tokens_per_example',
  'count_params',
  'flops_per_token',
  'param_count_formula',
  'scan_to_loop',
  'loop_to_scan',
]


def build_model(task: str, cfg: ModelConfig, num_classes: int = 0, pooling: str = 'mean'):
  """DecoderLM for 'lm', EncoderDecoder for 'translate', Classifier for 'classify'."""
  if task == 'lm':
    return DecoderLM(cfg)
  if task == 'translate':
    return EncoderDecoder(cfg)
  if task == 'classify':
    return Classifier(cfg, num_classes=num_classes, pooling=pooling)
  raise ValueError(f'task={task!r} is invalid: use one of {TASKS}')


def init_inputs(task: str, cfg: ModelConfig, batch: int = 1) -> tuple:
  """Dummy inputs with the training shapes: [batch, max_len] tokens (and targets to translate)."""
  tokens = jnp.ones((batch, cfg.max_len), jnp.int32)
  return (tokens, tokens) if task == 'translate' else (tokens,)


def tokens_per_example(task: str, cfg: ModelConfig) -> int:
  """Positions a train example feeds through the model, padding included (`padded_tokens_per_s`)."""
  return 2 * cfg.max_len if task == 'translate' else cfg.max_len
