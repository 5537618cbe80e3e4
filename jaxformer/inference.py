"""What the command lines share: load a trained model, text to tokens and back, error reports.

    loaded = load("runs/numbers_en_de")     # a run workdir (its best checkpoint) or an export dir
    loaded.model, loaded.params, loaded.tokenizer, loaded.task, loaded.model_config

Command-line errors (bad flags, a missing run, an unknown split, text too long) print one line,
`error: ...`, on stderr and exit with code 2, like train.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
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


def until_eos(row, eos_id: int) -> list[int]:
  """Token ids before the first EOS (the whole row if there is none)."""
  row = [int(t) for t in np.asarray(row).tolist()]
  return row[: row.index(eos_id)] if eos_id in row else row


def decode_rows(tokenizer, rows) -> list[str]:
  """int[B, T] decoder outputs -> B strings, each cut at its EOS."""
  return [tokenizer.decode(until_eos(row, tokenizer.eos_id)) for row in np.asarray(rows)]


# ----- command-line plumbing ----------------------------------------------------------------


class UsageError(ValueError):
  """A bad command line (argparse's message, kept to one line)."""


class Parser(argparse.ArgumentParser):
  """argparse that raises instead of printing usage and exiting, so errors stay one line."""

  def error(self, message):
    raise UsageError(f'{message} (see {self.prog} --help)')


def run_cli(
  main: Callable[[argparse.Namespace], int], parser: Parser, argv: Sequence[str] | None
) -> int:
  """Parses argv, runs main(args); expected failures -> `error: <one line>` on stderr, code 2."""
  from absl import logging as absl_logging

  from jaxformer.checkpoint import CheckpointError
  from jaxformer.data import DataError

  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax logs warnings meant for training runs

  try:
    args = parser.parse_args(argv)
    return main(args)
  except (UsageError, ValueError, CheckpointError, DataError, OSError) as e:
    message = ' '.join(str(e).split()) or type(e).__name__
    print(f'error: {message}', file=sys.stderr, flush=True)
    return 2


def write_json_atomic(path: str, data: dict) -> None:
  """Writes JSON to path all-or-nothing (temp file in the same directory, then rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.json', dir=directory)
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(data, f, indent=2, sort_keys=True)
      f.write('\n')
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
