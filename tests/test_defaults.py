"""One source for each default: the base training config (configs/default.py) and ModelConfig."""

from __future__ import annotations

import dataclasses

import ml_collections
import pytest
from jaxformer.configs import default

from jaxformer.config import MONITORS, ModelConfig, early_stopping_monitor
from jaxformer.data import pipeline


def test_the_base_model_config_is_model_configs_defaults_but_for_training_choices():
  base = default.get_model_config().to_dict()
  # Every field but LoRA's, which have their own section (c.lora) that training maps onto them.
  # The field defaults, not ModelConfig().to_dict(): that one holds scan_layers='auto' resolved.
  library = {
    f.name: f.default for f in dataclasses.fields(ModelConfig) if not f.name.startswith('lora_')
  }
  assert set(base) == set(library)
  assert set(default.get_config().lora) == {
    k[len('lora_') :] for k in ModelConfig().to_dict() if k.startswith('lora_')
  }
  changed = {k for k in base if base[k] != library[k]}
  assert changed == {
    'vocab_size',
    'vocab_multiple',
    'num_encoder_layers',
    'num_decoder_layers',
    'max_len',
    'dtype',
  }
  assert base['vocab_size'] == 0  # 0 = the tokenizer's size, which ModelConfig cannot hold
  dataclasses.replace(ModelConfig(), **dict(base, vocab_size=256))  # and it is a valid one


def test_a_config_without_a_monitor_gets_the_base_configs():
  base = default.get_config().early_stopping.monitor
  assert base in MONITORS
  assert early_stopping_monitor({}) == base
  assert early_stopping_monitor({'early_stopping': {'patience': 3}}) == base
  assert early_stopping_monitor({'early_stopping': {'monitor': 'error'}}) == 'error'
  config = default.get_config()
  config.early_stopping.monitor = 'error'
  assert early_stopping_monitor(config) == 'error'


class _OneLine:
  """A one-example text source (duck-typed like jaxformer.data.sources.Source)."""

  name, task = 'one_line', 'lm'

  def num_examples(self, split):
    return 1

  def example(self, split, i):
    return {'text': 'to be or not to be'}

  def fingerprint(self, split):
    return 'one_line'


@pytest.mark.parametrize('vocab_size', [0, 123])
def test_a_sentencepiece_vocab_size_of_0_is_the_base_configs(monkeypatch, tmp_path, vocab_size):
  asked = []
  monkeypatch.setattr(pipeline, 'train_sentencepiece', lambda texts, n, **kw: asked.append(n))
  dataset = ml_collections.ConfigDict({'tokenizer': 'sentencepiece', 'vocab_size': vocab_size})
  pipeline._make_tokenizer(dataset, _OneLine(), 'train', str(tmp_path))
  assert asked == [vocab_size or default.get_dataset_config().vocab_size]


def test_genre_fine_tuning_has_the_backbone_shape_the_default_lm_pretrains():
  """`python train.py` then `--config=configs/genre_finetune.py` must load without a mismatch."""
  import jax
  from jaxformer.configs import genre_finetune, genre_scratch, shakespeare_lm

  from jaxformer.models import build_model, init_inputs

  def backbone_shapes(config, task):
    fields = {k: v for k, v in config.model.to_dict().items() if not k.startswith('lora_')}
    cfg = ModelConfig(**dict(fields, vocab_size=config.dataset.vocab_size))
    model = build_model(task, cfg, num_classes=3)
    params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), *init_inputs(task, cfg))['params']
    )
    return jax.tree.map(lambda x: x.shape, params['backbone'])

  lm, tuned = shakespeare_lm.get_config(), genre_finetune.get_config()
  assert backbone_shapes(tuned, 'classify') == backbone_shapes(lm, 'lm')
  # From scratch is the same architecture, so the two compare pretraining and nothing else.
  assert backbone_shapes(genre_scratch.get_config(), 'classify') == backbone_shapes(lm, 'lm')
