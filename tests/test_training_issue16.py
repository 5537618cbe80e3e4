"""Training-loop correctness (issue 16): what is scored, which rate is applied, what is clipped."""

import math

import numpy as np
import pytest

from configs import tiny


def _tiny_run_config(**overrides):
  config = tiny.get_config()
  config.mesh_shape, config.sample_tokens = (1, 1), 0
  for key, value in overrides.items():
    config[key] = value
  return config


def test_validation_bits_per_byte_divide_by_the_bytes_of_the_scored_targets(tmp_path):
  from jaxformer.training import train_and_evaluate
  from jaxformer.training.loop import prepare

  config = _tiny_run_config(num_train_steps=2, eval_every_steps=2, eval_steps=2)
  # Subword tokens: a prefix's bytes per token differ from the whole split's.
  config.dataset.tokenizer, config.dataset.vocab_size = 'sentencepiece', 512
  rows = []
  train_and_evaluate(config, str(tmp_path / 'run'), on_log=lambda step, row: rows.append(row))
  (val,) = [r for r in rows if r['split'] == 'val']

  data = prepare(config, str(tmp_path / 'run')).data
  sizes = data.tokenizer.token_bytes()
  scored = list(data.eval_batches(config.dataset.eval_split))[:2]
  weight = sum(float(b['weights'].sum()) for b in scored)
  num_bytes = sum(int(np.sum(sizes[b['targets']] * (b['weights'] > 0))) for b in scored)
  loss_sum = val['loss'] * weight
  assert val['bits_per_byte'] == pytest.approx(loss_sum / math.log(2) / num_bytes, rel=1e-6)
