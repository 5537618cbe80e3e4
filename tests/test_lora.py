"""LoRA: adapters start at zero, only they and the head train, merging is exact, the optimizer
holds state for the trainable parameters only, and a LoRA run fine-tunes, resumes and exports."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import equations, run_train
from jaxformer.configs import default
from lora_checks import assert_base_frozen_and_adapters_moved
from model_fixtures import KEY, random_params, tiny, tokens

from jaxformer.checkpoint import load_pretrained
from jaxformer.model import lora
from jaxformer.model.transformer import Classifier, DecoderLM
from jaxformer.training.optim import make_optimizer

LORA = dict(lora_rank=4, lora_alpha=8.0, lora_targets='attention,mlp')


def paths(tree):
  return {jax.tree_util.keystr(p, simple=True, separator='/') for p, _ in _leaves(tree)}


def _leaves(tree):
  return jax.tree_util.tree_leaves_with_path(tree)


def with_random_b(params, seed=3):
  """params with every lora_b filled with noise (at init they are zero)."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if 'lora_b' in jax.tree_util.keystr(path):
      return jnp.asarray(rng.normal(0, 0.1, leaf.shape), leaf.dtype)
    return leaf

  return jax.tree_util.tree_map_with_path(fill, params)


@pytest.mark.parametrize('scan_layers', [True, False])
def test_adapted_model_equals_its_base_at_init(scan_layers):
  x = tokens((2, 8))
  cfg = tiny(scan_layers=scan_layers, **LORA)
  model = DecoderLM(cfg)
  params = nn.unbox(model.init(KEY, x)['params'])
  names = paths(lora.only_factors(params))
  layer = 'layer' if scan_layers else 'layer_0'
  for proj in ('self_attention/query', 'self_attention/out', 'mlp/wi', 'mlp/wo'):
    assert f'backbone/layers/{layer}/{proj}/lora_b' in names
  base = DecoderLM(tiny(scan_layers=scan_layers))
  base_params = lora.without_factors(params)
  assert paths(base_params) == paths(nn.unbox(jax.eval_shape(base.init, KEY, x)['params']))
  np.testing.assert_array_equal(
    model.apply({'params': params}, x), base.apply({'params': base_params}, x)
  )


def test_targets_select_projections_and_bad_targets_are_refused():
  cfg = tiny(lora_rank=2, lora_targets='query,value')
  params = nn.unbox(jax.eval_shape(DecoderLM(cfg).init, KEY, tokens((1, 4)))['params'])
  adapted = {p.split('/')[-2] for p in paths(lora.only_factors(params))}
  assert adapted == {'query', 'value'}
  with pytest.raises(ValueError, match='lora_targets'):
    tiny(lora_rank=2, lora_targets='query,ffn')
  with pytest.raises(ValueError, match='lora_rank'):
    tiny(lora_rank=-1)


def test_factors_are_sharded_like_the_kernel_they_adapt():
  from jaxformer import sharding

  cfg = tiny(**LORA)
  boxed = jax.eval_shape(DecoderLM(cfg).init, KEY, tokens((1, 4)))['params']
  shardings = sharding.param_shardings(boxed, sharding.make_mesh((2, 4)))
  layer = shardings['backbone']['layers']['layer']

  def spec(block, proj, name):
    s = tuple(layer[block][proj][name].spec)
    return s + (None,) * (4 - len(s))

  # query [layers, embed, heads, kv], heads split over 'model':
  # A [layers, embed, r], B [layers, r, heads, kv]
  assert spec('self_attention', 'query', 'kernel') == (None, None, 'model', None)
  assert spec('self_attention', 'query', 'lora_a') == (None, None, None, None)
  assert spec('self_attention', 'query', 'lora_b') == (None, None, 'model', None)
  # out [layers, heads, kv, embed]: A [layers, heads, kv, r] keeps the heads split, B does not
  assert spec('self_attention', 'out', 'kernel') == (None, 'model', None, None)
  assert spec('self_attention', 'out', 'lora_a') == (None, 'model', None, None)
  assert spec('self_attention', 'out', 'lora_b') == (None, None, None, None)
  # wi [layers, embed, mlp] -> B [layers, r, mlp]; wo [layers, mlp, embed] -> A [layers, mlp, r]
  assert spec('mlp', 'wi', 'lora_b') == (None, None, 'model', None)
  assert spec('mlp', 'wo', 'lora_a') == (None, 'model', None, None)


@pytest.mark.parametrize('scan_layers', [True, False])
def test_merged_model_equals_the_adapted_one(scan_layers):
  x = tokens((2, 8))
  cfg = tiny(scan_layers=scan_layers, **LORA)
  model = Classifier(cfg, num_classes=3)
  params = with_random_b(random_params(model, x))
  merged, merged_cfg = lora.merge(params, cfg)
  assert merged_cfg.lora_rank == 0 and not lora.has_factors(merged)
  adapted = model.apply({'params': params}, x)
  assert (
    np.abs(
      adapted
      - Classifier(cfg.replace(lora_rank=0), 3).apply({'params': lora.without_factors(params)}, x)
    ).max()
    > 1e-3
  )
  np.testing.assert_allclose(
    Classifier(merged_cfg, num_classes=3).apply({'params': merged}, x), adapted, atol=1e-5, rtol=0
  )


def train_config(**changes):
  c = default.get_config()
  c.learning_rate = 1e-2
  c.warmup_steps = 0
  c.grad_clip_norm = 1.0
  c.weight_decay = 0.1
  for key, value in changes.items():
    c[key] = value
  return c


def nbytes(tree):
  return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
  'kind',
  [pytest.param('classifier', marks=pytest.mark.slow), 'lm_untied'],  # classifier: ~20 s
)
def test_only_factors_and_head_change_and_optimizer_state_is_trainable_only(kind):
  x = tokens((4, 8))
  if kind == 'classifier':
    model = Classifier(tiny(**LORA), num_classes=3)
    labels = jnp.asarray([0, 1, 2, 1])

    def loss_of(logits):
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])
  else:
    model = DecoderLM(tiny(tie_embeddings=False, **LORA))

    def loss_of(logits):
      logp = jax.nn.log_softmax(logits[:, :-1])
      return -jnp.mean(jnp.take_along_axis(logp, x[:, 1:, None], -1))

  params = random_params(model, x)
  tx = make_optimizer(train_config(), params)
  state = tx.init(params)
  grad = jax.jit(jax.grad(lambda p: loss_of(model.apply({'params': p}, x))))
  new = params
  for _ in range(3):
    updates, state = tx.update(grad(new), state, new)
    new = jax.tree.map(lambda p, u: p + u, new, updates)
  head = 'head' if kind == 'classifier' else 'lm_head'
  labels_tree = lora.trainable_labels(params)
  leaves = zip(_leaves(params), jax.tree.leaves(new), jax.tree.leaves(labels_tree), strict=True)
  trainable = 0
  for path, before, after, label in ((p, b, a, lab) for (p, b), a, lab in leaves):
    name = jax.tree_util.keystr(path)
    if label == 'frozen':
      assert np.array_equal(before, after), name
    else:
      assert lora.is_factor(path) or head in name, name
      assert not np.array_equal(before, after), name  # every trainable leaf learns
      trainable += np.asarray(before).nbytes
  # AdamW keeps two moments per trainable parameter, plus a few step counters.
  state_bytes = nbytes(state)
  assert 2 * trainable <= state_bytes <= 2 * trainable + 64, (state_bytes, trainable)
  full = nbytes(lora.without_factors(params))  # what full fine-tuning's moments would take
  assert state_bytes < 2 * full


def _fresh_state(params, tx) -> dict:
  """A train state at step 0, as steps.make_train_step takes it."""
  return {
    'step': jnp.zeros((), jnp.int32),
    'params': params,
    'opt_state': tx.init(params),
    'rng': jax.random.key(1),
  }


def _assert_same_learned_state(a: dict, b: dict) -> None:
  """Parameters and optimizer state equal, bit for bit."""
  learned = lambda s: jax.tree.leaves((s['params'], s['opt_state']))  # noqa: E731
  for x, y in zip(learned(a), learned(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _dot_count(jaxpr) -> int:
  return sum(eqn.primitive.name == 'dot_general' for eqn in equations(jaxpr))


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
@pytest.mark.parametrize('kind', ['lora_lm', 'frozen_backbone_classifier'])
def test_frozen_parameters_get_no_backward_matmuls_and_the_update_is_unchanged(kind):
  """The train step stops frozen gradients (optim.trainable_mask): the backward pass loses their
  weight-gradient matmuls, while every parameter ends the step exactly as when the optimizer
  alone discarded those gradients."""
  from jaxformer.training import optim, steps

  x = tokens((4, 8))
  if kind == 'lora_lm':
    model, task, config = DecoderLM(tiny(**LORA)), 'lm', train_config()
    batch = {'inputs': x, 'targets': jnp.roll(x, -1, 1), 'weights': jnp.ones((4, 8))}
  else:
    model, task = Classifier(tiny(), num_classes=3), 'classify'
    config = train_config(freeze_backbone=True)
    batch = {'inputs': x, 'targets': jnp.asarray([0, 1, 2, 1]), 'weights': jnp.ones(4)}
  params = with_random_b(random_params(model, x))
  tx = make_optimizer(config, params)
  state = _fresh_state(params, tx)
  mask = optim.trainable_mask(config, params)
  assert mask is not None and not all(jax.tree.leaves(mask))
  stopped = steps.make_train_step(model, tx, task=task, trainable=mask)
  discarded = steps.make_train_step(model, tx, task=task)  # every gradient computed
  fewer = _dot_count(jax.make_jaxpr(stopped)(state, batch).jaxpr)
  allof = _dot_count(jax.make_jaxpr(discarded)(state, batch).jaxpr)
  assert fewer < allof, (fewer, allof)
  new_stopped, _ = jax.jit(stopped)(state, batch)
  new_discarded, _ = jax.jit(discarded)(state, batch)
  _assert_same_learned_state(new_stopped, new_discarded)


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_under_pmap_only_trainable_gradients_are_summed_across_devices():
  """A frozen gradient is zero on every device: the pmapped step all-reduces only the trainable
  ones, and still ends the step exactly where the step that sums every gradient does."""
  from jaxformer.training import optim, steps

  model, config = Classifier(tiny(), num_classes=3), train_config(freeze_backbone=True)
  x = tokens((4, 8))
  params = random_params(model, x)
  tx = make_optimizer(config, params)
  state = _fresh_state(params, tx)
  batch = {'inputs': x, 'targets': jnp.asarray([0, 1, 2, 1]), 'weights': jnp.ones(4)}
  mask = optim.trainable_mask(config, params)
  build = lambda trainable: steps.make_train_step(  # noqa: E731
    model, tx, task='classify', axis_name='data', trainable=trainable
  )
  jaxpr = jax.make_jaxpr(build(mask), axis_env=[('data', 2)])(state, batch).jaxpr
  summed = sum(len(e.invars) for e in equations(jaxpr) if e.primitive.name == 'psum')
  # The head's kernel and bias, the loss/weight/correct sums, and the real-token count.
  assert summed == sum(jax.tree.leaves(mask)) + 2, summed
  assert 0 < sum(jax.tree.leaves(mask)) < len(jax.tree.leaves(mask))
  replicate = lambda tree: jax.tree.map(lambda a: jnp.stack([a, a]), tree)  # noqa: E731
  split = jax.tree.map(lambda a: a.reshape((2, -1) + a.shape[1:]), batch)
  results = [
    jax.pmap(build(t), axis_name='data', devices=jax.devices()[:2])(replicate(state), split)[0]
    for t in (mask, None)
  ]
  _assert_same_learned_state(*results)


COMMON = [
  '--config=configs/tiny.py',
  '--config.num_train_steps=4',
  '--config.eval_every_steps=2',
  '--config.checkpoint_every_steps=2',
  '--config.sample_tokens=0',
  '--config.warmup_steps=1',
  '--config.model.vocab_size=260',  # the byte tokenizer's 259, padded to split over 2 devices
]


@pytest.fixture(scope='module')
def base_run(tmp_path_factory):
  """A tiny pretrained LM run (byte tokenizer), the starting point of the LoRA runs."""
  base = str(tmp_path_factory.mktemp('lora') / 'base')
  # The stacked layout, as the genre run below: the frozen-backbone check compares leaf by leaf.
  result = run_train(*COMMON, f'--workdir={base}', '--config.model.scan_layers=True')
  assert result.returncode == 0, result.stderr[-2000:]
  return base


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_a_lora_run_compiles_its_train_step_with_the_frozen_mask(base_run, tmp_path, monkeypatch):
  """The training loop's own train step (prepare -> compiled_steps) stops the base weights'
  gradients: it is built with the mask that marks only the adapters and the head trainable."""
  from jaxformer.configs import tiny as tiny_config

  from jaxformer.training import prepare, steps

  built = {}
  make = steps.make_train_step

  def spy(*args, **kwargs):
    built.update(kwargs)
    return make(*args, **kwargs)

  monkeypatch.setattr(steps, 'make_train_step', spy)
  config = tiny_config.get_config()
  config.model.vocab_size, config.model.scan_layers = 260, True
  config.init_from, config.lora.rank, config.mesh_shape = base_run, 2, (1, 1)
  prepare.compiled_steps(prepare.prepare(config, str(tmp_path / 'run')))
  mask = built['trainable']
  for path, trains in jax.tree_util.tree_leaves_with_path(mask):
    assert trains == (lora.is_factor(path) or 'lm_head' in jax.tree_util.keystr(path)), path
  assert any(jax.tree.leaves(mask)) and not all(jax.tree.leaves(mask))


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_lora_lm_run_fine_tunes_resumes_and_merges(base_run, tmp_path):
  run = str(tmp_path / 'lora')
  lora_args = [
    f'--workdir={run}',
    f'--config.init_from={base_run}',
    '--config.lora.rank=2',
    '--config.lora.targets=query,value,mlp',
    '--config.learning_rate=1e-2',
    '--config.restore_best=False',
  ]
  result = run_train(*COMMON, *lora_args)
  assert result.returncode == 0, result.stderr[-2000:]
  # The base weights are exactly the pretrained ones; the adapters moved away from zero.
  assert_base_frozen_and_adapters_moved(run, base_run)
  # Resume: a longer run continues from the saved step.
  result = run_train(COMMON[0], '--config.num_train_steps=6', *COMMON[2:], *lora_args)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'resuming from step 4' in result.stdout + result.stderr
  with open(os.path.join(run, 'summary.json')) as f:
    assert json.load(f)['last_step'] == 6
  tuned = assert_base_frozen_and_adapters_moved(run, base_run)
  # --merge-lora: an ordinary model with the same outputs.
  from jaxformer import export

  merged_dir = str(tmp_path / 'merged')
  assert export.main(['--workdir', run, '--out', merged_dir, '--merge-lora']) == 0
  merged = load_pretrained(merged_dir)
  assert merged.model_config.lora_rank == 0 and not lora.has_factors(merged.params)
  x = tokens((2, 16))
  np.testing.assert_allclose(
    DecoderLM(merged.model_config).apply({'params': merged.params}, x),
    DecoderLM(tuned.model_config).apply({'params': tuned.params}, x),
    atol=1e-5,
    rtol=0,
  )
  assert export.main(['--workdir', base_run, '--out', str(tmp_path / 'x'), '--merge-lora']) == 2


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_lora_classifier_run_on_a_mesh_stops_early(base_run, tmp_path):
  """Genre classification with adapters on a (data 2, model 2) mesh of 4 devices."""
  run = str(tmp_path / 'genre')
  result = run_train(
    '--config=configs/genre_scratch.py',
    f'--workdir={run}',
    f'--config.init_from={base_run}',
    '--config.model.vocab_size=260',
    '--config.model.d_model=32',
    '--config.model.num_heads=2',
    '--config.model.num_layers=2',
    '--config.model.max_len=32',
    '--config.model.position=learned',
    '--config.model.activation=gelu',  # the base run's block, not the default LM's SwiGLU
    '--config.model.d_ff=0',
    '--config.model.scan_layers=True',
    '--config.lora.rank=2',
    '--config.batch_size=8',
    '--config.num_train_steps=20',
    '--config.eval_every_steps=2',
    '--config.checkpoint_every_steps=2',
    '--config.early_stopping.patience=1',
    '--config.early_stopping.min_delta=10',  # nothing after the first evaluation improves
    '--config.dataset.test_split=',
    '--config.mesh_shape=(2,2)',
    devices=4,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  with open(os.path.join(run, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['stopped_early'] and summary['best_step'] == 2 and summary['last_step'] == 4
  assert_base_frozen_and_adapters_moved(run, base_run)


def test_lora_refuses_backbone_learning_rate_options():
  from jaxformer.training.errors import ConfigError
  from jaxformer.training.setup import check_config

  for change in (dict(backbone_lr_multiplier=0.3), dict(head_only_steps=20)):
    config = train_config(**change)
    config.lora.rank = 4
    with pytest.raises(ConfigError, match='lora.rank > 0 already freezes the backbone'):
      check_config(config)
    config.lora.rank = 0
    check_config(config)  # without LoRA both options are fine


def test_a_run_saved_before_the_lora_fields_existed_still_resumes():
  from jaxformer.training.errors import ConfigError
  from jaxformer.training.setup import resume_changes

  model = tiny().to_dict()
  new = {'task': 'lm', 'model': model, 'num_classes': 0, 'pooling': 'mean', 'dataset': {}}
  old = json.loads(json.dumps(new))
  for key in ('lora_rank', 'lora_alpha', 'lora_targets'):
    del old['model'][key]  # config.json as runs wrote it before LoRA
  assert resume_changes(old, new) == []
  with pytest.raises(ConfigError, match=r'different model.lora_rank \(0 -> 2\)'):
    resume_changes(old, dict(new, model=dict(model, lora_rank=2)))
