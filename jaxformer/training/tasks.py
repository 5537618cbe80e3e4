"""What differs between tasks: which model is built and which dummy inputs initialize it."""

from __future__ import annotations

import jax.numpy as jnp

from jaxformer.config import ModelConfig
from jaxformer.models import Classifier, DecoderLM, EncoderDecoder


def build_model(task: str, cfg: ModelConfig, num_classes: int = 0, pooling: str = 'mean'):
  """DecoderLM for 'lm', EncoderDecoder for 'translate', Classifier for 'classify'."""
  if task == 'lm':
    return DecoderLM(cfg)
  if task == 'translate':
    return EncoderDecoder(cfg)
  return Classifier(cfg, num_classes=num_classes, pooling=pooling)


def init_inputs(task: str, cfg: ModelConfig, batch: int = 1) -> tuple:
  """Dummy inputs with the training shapes: [batch, max_len] tokens (and targets to translate)."""
  tokens = jnp.ones((batch, cfg.max_len), jnp.int32)
  return (tokens, tokens) if task == 'translate' else (tokens,)


def tokens_per_example(task: str, cfg: ModelConfig) -> int:
  """Positions a train example feeds through the model, padding included (`padded_tokens_per_s`)."""
  return 2 * cfg.max_len if task == 'translate' else cfg.max_len


def real_tokens(task: str, batch) -> jnp.ndarray:
  """Non-padding tokens a batch feeds through the model (`tokens_per_s` counts these).

  Pipelines pad with id 0, every tokenizer's pad_id. A translation's decoder reads one position
  per target token (BOS + target[:-1] predicts target), so its weights count them.
  """
  count = jnp.sum(batch['inputs'] != 0)
  if task == 'translate':
    count = count + jnp.sum(batch['weights'] > 0)
  return count.astype(jnp.float32)
