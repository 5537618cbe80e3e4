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
  """Tokens a train example feeds through the model (throughput counts these, like nanoGPT)."""
  return 2 * cfg.max_len if task == 'translate' else cfg.max_len
