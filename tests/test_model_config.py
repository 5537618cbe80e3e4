"""ModelConfig validation, parameter-count / FLOP formulas, and DecoderLM -> Classifier transfer."""

import dataclasses
import json
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_fixtures import KEY, tiny

from jaxformer import ModelConfig
from jaxformer.config import TASKS
from jaxformer.model import param_count_formula
from jaxformer.models import (
  Classifier,
  DecoderLM,
  EncoderDecoder,
  build_model,
  count_params,
  flops_per_token,
  init_inputs,
)

# ----- validation -----

INVALID = [
  ('vocab_size', 0),
  ('d_model', -8),
  ('num_heads', 0),
  ('num_layers', 0),
  ('num_encoder_layers', 0),
  ('num_decoder_layers', -1),
  ('max_len', 0),
  ('d_ff', -1),
  ('mlp_ratio', -1.0),
  ('d_model', 18),
  ('dropout_rate', 1.0),
  ('dropout_rate', -0.1),
  ('attention_dropout_rate', 1.5),
  ('activation', 'tanh'),
  ('position', 'alibi'),
  ('norm', 'sandwich'),
  ('remat', 'some'),
  ('dtype', 'float16'),
  ('param_dtype', 'int8'),
  ('attention_impl', 'flash'),
  ('layer_norm_epsilon', 0.0),
  ('tie_embeddings', 'yes'),
  ('use_bias', 1),
  ('scan_layers', None),
  ('scan_layers', 'yes'),
  ('scan_layers', 1),
  ('vocab_size', 3.5),
  ('d_model', True),
]


@pytest.mark.parametrize('field,value', INVALID)
def test_each_invalid_field_raises_value_error_naming_it(field, value):
  with pytest.raises(ValueError, match=rf'ModelConfig\.{field}=') as err:
    tiny(**{field: value})
  assert '\n' not in str(err.value)


def test_rope_needs_even_head_dim_and_d_model_divisible_by_heads():
  with pytest.raises(ValueError, match='ModelConfig.position=.*even head_dim'):
    tiny(d_model=12, num_heads=4, position='rope')  # head_dim 3
  with pytest.raises(ValueError, match='ModelConfig.d_model=.*divisible by num_heads'):
    tiny(d_model=16, num_heads=3)


def test_dict_round_trip_and_unknown_keys():
  cfg = tiny(activation='swiglu', d_ff=24, remat='dots')
  d = json.loads(json.dumps(cfg.to_dict()))
  assert ModelConfig.from_dict(d) == cfg
  with pytest.raises(ValueError, match="'hidden_size'"):
    ModelConfig.from_dict({**d, 'hidden_size': 3})
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.d_model = 8


def test_derived_sizes():
  cfg = tiny()
  assert (cfg.head_dim, cfg.ff_dim, cfg.compute_dtype) == (4, 64, jnp.float32)
  assert tiny(d_ff=24).ff_dim == 24 and tiny(mlp_ratio=0.0).ff_dim == 0
  assert tiny(dtype='auto').compute_dtype == jnp.float32  # tests run on CPU


# ----- scan_layers='auto' -----


def test_scan_layers_auto_loops_shallow_stacks_and_scans_deep_or_remat_ones():
  from jaxformer.config import AUTO_LOOP_MAX_LAYERS as most

  assert ModelConfig().scan_layers is False  # the library default: 4 layers, a loop
  assert tiny(scan_layers='auto', num_layers=most).scan_layers is False
  assert tiny(scan_layers='auto', num_layers=most + 1).scan_layers is True
  assert tiny(scan_layers='auto', num_decoder_layers=most + 1).scan_layers is True  # any stack
  assert tiny(scan_layers='auto', remat='dots').scan_layers is True  # remat saves only in scan
  assert tiny(scan_layers=False, num_layers=most + 1).scan_layers is False  # explicit wins
  assert tiny(scan_layers=True).scan_layers is True
  # replace keeps the resolved layout (built parameters keep fitting) unless asked again
  assert ModelConfig().replace(num_layers=most + 1).scan_layers is False
  assert ModelConfig().replace(num_layers=most + 1, scan_layers='auto').scan_layers is True


def test_auto_layout_is_recorded_so_a_changed_rule_still_reads_the_saved_tree(monkeypatch):
  """Checkpoints and exports store to_dict(): the resolved layout, not 'auto'. A jaxformer whose
  rule resolves differently (simulated by moving the threshold) builds the saved tree from it."""
  import jaxformer.config as config_lib

  cfg = tiny(scan_layers='auto')  # 2 layers: the loop
  saved = json.loads(json.dumps(cfg.to_dict()))
  assert saved['scan_layers'] is False
  monkeypatch.setattr(config_lib, 'AUTO_LOOP_MAX_LAYERS', 1)
  assert tiny(scan_layers='auto').scan_layers is True  # the rule changed
  x = jnp.ones((1, 4), jnp.int32)

  def tree(c):
    return jax.tree.structure(jax.eval_shape(DecoderLM(c).init, KEY, x)['params'])

  assert ModelConfig.from_dict(saved) == cfg
  assert tree(ModelConfig.from_dict(saved)) == tree(cfg)


def test_resume_with_auto_keeps_the_saved_runs_layout():
  """A run saved with scan (the default before 'auto') resumes with 'auto' in scan, even where
  'auto' now resolves to the loop; an explicit value is left to resume_changes to judge."""
  from jaxformer.configs import default

  from jaxformer.training import setup

  config = default.get_config()
  config.model.num_layers, config.model.vocab_size = 2, 64
  assert setup.model_config(config, 64).scan_layers is False
  saved = setup.resolved_dict(config, setup.model_config(config, 64))
  saved['model']['scan_layers'] = True
  setup.keep_saved_layout(config, saved)
  cfg = setup.model_config(config, 64)
  assert cfg.scan_layers is True
  assert setup.resume_changes(saved, setup.resolved_dict(config, cfg)) == []
  config.model.scan_layers = False
  setup.keep_saved_layout(config, saved)
  assert config.model.scan_layers is False


def test_a_run_saved_before_vocabulary_padding_resumes_unpadded():
  """Its config.json has no model.vocab_multiple and its tables are unpadded: resuming under
  today's default (128) would be refused as a model change."""
  from jaxformer.configs import default

  from jaxformer.training import setup

  config = default.get_config()
  config.model.num_layers, config.model.vocab_size = 2, 259
  saved = setup.resolved_dict(config, setup.model_config(config, 259))
  del saved['model']['vocab_multiple']
  assert config.model.vocab_multiple == 128
  setup.keep_saved_layout(config, saved)
  cfg = setup.model_config(config, 259)
  assert cfg.padded_vocab_size == 259
  assert setup.resume_changes(saved, setup.resolved_dict(config, cfg)) == []


# ----- parameter count and FLOPs -----

COUNT_CONFIGS = [
  {},
  dict(activation='swiglu', tie_embeddings=False),
  dict(use_bias=False, position='rope', norm='post'),
  dict(mlp_ratio=0.0, position='sinusoidal', scan_layers=False),
  dict(d_ff=24, num_layers=3),
]


@pytest.mark.parametrize('overrides', COUNT_CONFIGS)
def test_param_count_matches_formula(overrides):
  cfg = tiny(**overrides)
  for task in TASKS:
    model = build_model(task, cfg, num_classes=5)
    params = jax.eval_shape(model.init, KEY, *init_inputs(task, cfg))['params']
    assert count_params(params) == param_count_formula(cfg, task, num_classes=5), (task, overrides)


def test_param_count_formula_by_hand():
  # d=16, V=32, f=64, 2 layers, learned positions (16 x 16), tied, pre-LN, biases:
  # layer = attention (4*256 + 64) + MLP (2*16*64 + 64 + 16) + 2 LayerNorms (2 * 32) = 3280
  assert param_count_formula(tiny()) == 32 * 16 + 16 * 16 + 2 * 3280 + 32


def test_build_model_refuses_an_unknown_task():
  assert [type(build_model(t, tiny(), num_classes=2)) for t in TASKS] == [
    DecoderLM,
    EncoderDecoder,
    Classifier,
  ]
  with pytest.raises(ValueError, match="task='clasify' is invalid"):
    build_model('clasify', tiny(), num_classes=2)


def test_flops_per_token_formula():
  cfg = tiny()
  n_matmul = 2 * 3280 + 32 * 16  # non-embedding params + output projection
  assert flops_per_token(cfg, 8) == 6 * n_matmul + 12 * 2 * 16 * 8
  assert flops_per_token(cfg, 16) - flops_per_token(cfg, 8) == 12 * 2 * 16 * 8
  assert flops_per_token(cfg, 8, task='translate') > flops_per_token(cfg, 8)
  with pytest.raises(ValueError, match='task'):
    flops_per_token(cfg, 8, task='vision')


# ----- backbone transfer -----


def test_decoder_lm_backbone_loads_into_classifier():
  cfg = tiny(tie_embeddings=False)
  x = jnp.asarray(np.random.default_rng(0).integers(1, 32, (2, 6)), jnp.int32).at[1, 4:].set(0)
  lm, clf = DecoderLM(cfg), Classifier(cfg, num_classes=3, pooling='mean')
  rng = np.random.default_rng(2)
  lm_params = jax.tree.map(
    lambda a: jnp.asarray(rng.normal(0, 0.1, a.shape) + 1, a.dtype),
    nn.unbox(jax.eval_shape(lm.init, KEY, x))['params'],
  )
  clf_abstract = nn.unbox(jax.eval_shape(clf.init, KEY, x))['params']
  assert set(lm_params) == {'backbone', 'lm_head'} and set(clf_abstract) == {'backbone', 'head'}
  # Same names and shapes: the pretrained backbone drops in unchanged.
  assert jax.tree.structure(lm_params['backbone']) == jax.tree.structure(clf_abstract['backbone'])
  jax.tree.map(
    lambda a, b: np.testing.assert_equal(a.shape, b.shape),
    lm_params['backbone'],
    clf_abstract['backbone'],
  )

  head = {
    'kernel': jnp.asarray(np.random.default_rng(1).normal(size=(16, 3)), jnp.float32),
    'bias': jnp.ones(3),
  }
  logits = jax.jit(clf.apply)({'params': {'backbone': lm_params['backbone'], 'head': head}}, x)
  hidden = jax.jit(lm.apply, static_argnames='method')(
    {'params': lm_params}, x, method=lambda m, t: m.backbone(t)
  )
  valid = np.asarray(x != 0, np.float32)[..., None]
  pooled = (np.asarray(hidden) * valid).sum(1) / valid.sum(1)  # mean over non-pad tokens
  np.testing.assert_allclose(
    np.asarray(logits), pooled @ np.asarray(head['kernel']) + 1.0, atol=1e-5
  )


def test_remat_without_scan_warns_that_it_saves_nothing(caplog):
  """XLA:CPU hoists a looped layer's recomputation (test_model: the step's temporaries are
  unchanged), so the run says so instead of silently spending compute for nothing."""
  from jaxformer.configs import default

  from jaxformer.training import setup

  c = default.get_config()
  c.model.remat, c.model.scan_layers = 'full', False
  with caplog.at_level(logging.WARNING):
    setup.check_config(c)
  assert 'saves no memory' in caplog.text
  caplog.clear()
  c.model.scan_layers = True
  with caplog.at_level(logging.WARNING):
    setup.check_config(c)
  assert 'saves no memory' not in caplog.text
