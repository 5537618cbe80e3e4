"""Load a trained model for inference, and turn source texts into its input tokens.

    loaded = load("runs/numbers_en_de")     # a run workdir (its best checkpoint) or an export dir
    loaded.model, loaded.params, loaded.tokenizer, loaded.task, loaded.model_config

Generated ids go back to text with jaxformer.data.tokenizers.decode_rows. The command lines
(generate, translate, evaluate, predict, hf) build on this module and on jaxformer.cli.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A trained model ready for inference."""

  path: str
  task: str  # 'lm' | 'translate' | 'classify'
  model: Any  # DecoderLM | EncoderDecoder | Classifier
  params: Any
  tokenizer: Any
  model_config: Any  # jaxformer.config.ModelConfig
  config: dict  # the training run's resolved config (dataset, pooling, batch_size, ...)
  num_classes: int
  step: int | None


def load(path: str) -> Loaded:
  """Loads a run workdir or an export directory (see jaxformer.checkpoint.load_pretrained)."""
  from jaxformer.checkpoint import load_pretrained
  from jaxformer.data import load_tokenizer
  from jaxformer.models import build_model

  if not os.path.isdir(path):
    raise ValueError(
      f"{path} is not a directory; pass a training run's --workdir or an export directory"
    )
  pretrained = load_pretrained(path)
  if pretrained.tokenizer_dir is None:
    raise ValueError(f'{path} has no tokenizer/ directory; it cannot turn text into tokens')
  if not isinstance(pretrained.config or {}, dict):
    raise ValueError(f"{path}: the run's config is not a JSON object; re-export the model")
  config = dict(pretrained.config or {})
  try:
    num_classes = int(pretrained.num_classes or 0)
  except (TypeError, ValueError):
    raise ValueError(f'{path}: num_classes {pretrained.num_classes!r} is not a number') from None
  model = build_model(
    pretrained.task, pretrained.model_config, num_classes, config.get('pooling', 'mean')
  )
  _check_params_fit(path, pretrained.task, pretrained.model_config, model, pretrained.params)
  return Loaded(
    path=path,
    task=pretrained.task,
    model=model,
    params=pretrained.params,
    tokenizer=load_tokenizer(pretrained.tokenizer_dir),
    model_config=pretrained.model_config,
    config=config,
    num_classes=num_classes,
    step=pretrained.step,
  )


def _check_params_fit(path: str, task: str, cfg, model, params) -> None:
  """The saved params must be the ones the recorded task and model config build (a file inside
  the run says both, so a changed task or config is caught here, not as a traceback later)."""
  import jax
  from flax import linen as nn

  from jaxformer.models import init_inputs

  def shapes(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(k): tuple(v.shape) for k, v in flat}

  dummy = init_inputs(task, cfg)
  expected = jax.eval_shape(
    lambda: nn.unbox(model.init(jax.random.key(0), *dummy, deterministic=True)['params'])
  )
  want, have = shapes(expected), shapes(params)
  if want != have:
    diff = sorted(set(want.items()) ^ set(have.items()))[0]
    raise ValueError(
      f"{path}: the saved params do not fit its recorded '{task}' model (first difference at "
      f'{diff[0]}); the config or task was changed after training: re-export the model'
    )


def require_task(loaded: Loaded, task: str, command: str) -> None:
  if loaded.task != task:
    raise ValueError(
      f"{loaded.path} holds a '{loaded.task}' model; {command} needs a '{task}' model"
    )


# ----- text <-> tokens ----------------------------------------------------------------------


def encode_sources(tokenizer, texts: Sequence[str], length: int) -> np.ndarray:
  """Source texts -> int32[len(texts), length]: tokens + EOS, 0-padded (as in training).

  Raises ValueError for a text that does not fit, rather than translating a truncated one.
  """
  out = np.zeros((len(texts), length), np.int32)
  for i, text in enumerate(texts):
    ids = tokenizer.encode(text) + [tokenizer.eos_id]
    if len(ids) > length:
      raise ValueError(
        f"source {i} is {len(ids)} tokens with EOS, more than the model's max_len={length}; "
        'shorten it'
      )
    out[i, : len(ids)] = ids
  return out


# Names that moved out of this module, still importable from here (code written against 0.1.0
# does `inference.decode_rows(...)`). Imported on first use, so a command line's --help stays fast.
_MOVED = {
  'until_eos': 'jaxformer.data.tokenizers',
  'decode_rows': 'jaxformer.data.tokenizers',
  'UsageError': 'jaxformer.cli',
  'Parser': 'jaxformer.cli',
  'run_cli': 'jaxformer.cli',
  'write_json_atomic': 'jaxformer.training.writers',
}


def __getattr__(name: str):
  if name in _MOVED:
    return getattr(importlib.import_module(_MOVED[name]), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
