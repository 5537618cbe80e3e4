"""Training-loop accounting: which bytes are scored, which rate is applied, what is clipped."""

import math

import numpy as np
import pytest
from jaxformer.configs import tiny


def _tiny_run_config(**overrides):
  config = tiny.get_config()
  config.mesh_shape, config.sample_tokens = (1, 1), 0
  for key, value in overrides.items():
    config[key] = value
  return config


def test_validation_bits_per_byte_divide_by_the_bytes_of_the_scored_targets(tmp_path):
  from jaxformer.training import train_and_evaluate
  from jaxformer.training.prepare import prepare

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


# ----------------------------------------------------------------------------- learning rates


def _optimizer_config(**overrides):
  from jaxformer.configs import default

  c = default.get_config()
  c.num_train_steps, c.warmup_steps, c.learning_rate, c.weight_decay = 10, 3, 1e-2, 0.0
  for key, value in overrides.items():
    c[key] = value
  return c


def _two_group_params():
  import jax.numpy as jnp

  return {'backbone': {'w': jnp.zeros(4)}, 'head': {'w': jnp.zeros(3)}}


def _grads(key, backbone_scale=1.0):
  import jax

  kb, kh = jax.random.split(key)
  return {
    'backbone': {'w': backbone_scale * jax.random.normal(kb, (4,))},
    'head': {'w': jax.random.normal(kh, (3,))},
  }


def test_the_first_update_moves_the_weights():
  import jax.numpy as jnp

  from jaxformer.training import optim

  for kind in ('cosine', 'rsqrt', 'constant'):
    config = _optimizer_config(lr_schedule=kind)
    schedule = optim.learning_rate_schedule(config)
    assert float(schedule(0)) == pytest.approx(1e-2 / 3), kind  # warmup counts from 1
    assert float(schedule(2)) == pytest.approx(1e-2), kind
  params = {'w': jnp.ones(3)}
  tx = optim.make_optimizer(_optimizer_config(), params)
  updates, _ = tx.update({'w': jnp.ones(3)}, tx.init(params), params)
  assert float(jnp.abs(updates['w']).min()) > 0


def test_logged_rates_are_the_rates_each_group_gets():
  """Against Adam at rate 1 on the same gradients: the update ratio is the applied rate."""
  import jax
  import optax

  from jaxformer.training import optim

  config = _optimizer_config(
    backbone_lr_multiplier=0.5, head_only_steps=2, reduce_on_plateau=True, grad_clip_norm=0.0
  )
  params = _two_group_params()
  tx = optim.make_optimizer(config, params)
  rates = optim.applied_learning_rates(config, params)
  unit = optax.adam(1.0, b1=config.adam_b1, b2=config.adam_b2, eps=1e-8)
  state, unit_state = tx.init(params), unit.init(params)
  logged = []
  for count in range(8):
    if count in (3, 5, 7):  # evaluations scoring 1.0 three times: the third halves the rate
      state = optim.after_evaluation(state, 1.0)
    grads = _grads(jax.random.key(count))
    lr = {k: float(v) for k, v in rates(count, state).items()}
    updates, state = tx.update(grads, state, params)
    unit_updates, unit_state = unit.update(grads, unit_state, params)
    for group, name in (('head', 'lr'), ('backbone', 'lr_backbone')):
      np.testing.assert_allclose(
        updates[group]['w'], lr[name] * unit_updates[group]['w'], rtol=1e-5, atol=1e-12
      )
    logged.append((lr['lr'], lr['lr_backbone']))
  peak = 1e-2
  assert logged[0] == pytest.approx((peak / 3, 0.0))  # head only, warming up
  assert logged[2] == pytest.approx((peak, 0.5 * peak))
  assert logged[7][0] == pytest.approx(0.5 * float(optim.learning_rate_schedule(config)(7)))


def test_train_step_reports_the_rate_it_applied():
  import jax
  import jax.numpy as jnp
  from flax import linen as nn

  from jaxformer import ModelConfig
  from jaxformer.models import Classifier
  from jaxformer.training import optim, steps

  cfg = ModelConfig(vocab_size=50, d_model=16, num_heads=2, num_layers=1, max_len=8)
  model = Classifier(cfg, num_classes=3)
  params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))['params'])
  config = _optimizer_config(backbone_lr_multiplier=0.25, head_only_steps=1)
  tx = optim.make_optimizer(config, params)
  step = jax.jit(
    steps.make_train_step(
      model, tx, task='classify', learning_rates=optim.applied_learning_rates(config, params)
    )
  )
  state = {'step': jnp.zeros((), jnp.int32), 'params': params, 'opt_state': tx.init(params)}
  state['rng'] = jax.random.key(1)
  batch = {'inputs': jnp.ones((4, 8), jnp.int32), 'targets': jnp.arange(4) % 3}
  batch['weights'] = jnp.ones(4)
  seen = []
  for _ in range(3):
    state, metrics = step(state, batch)
    seen.append((float(metrics['lr']), float(metrics['lr_backbone'])))
  peak = 1e-2
  expected = [peak / 3, 0.0, 2 * peak / 3, peak / 6, peak, peak / 4]  # (lr, lr_backbone) x 3
  assert [x for pair in seen for x in pair] == pytest.approx(expected)


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_reduce_on_plateau_follows_the_validation_metric(tmp_path, monkeypatch):
  from jaxformer.training import loop, train_and_evaluate

  # Validation never improves, while the training loss falls: the rate must halve at the third
  # evaluation (best, then two without improvement), whatever the training loss does.
  monkeypatch.setattr(
    loop._Trainer,
    'evaluate',
    lambda self, *a, **k: {'loss': 5.0, 'accuracy': 0.0, 'bits_per_byte': 7.0},
  )
  config = _tiny_run_config(
    num_train_steps=8, eval_every_steps=2, log_every_steps=1, checkpoint_every_steps=100
  )
  config.lr_schedule, config.warmup_steps, config.reduce_on_plateau = 'constant', 0, True
  rows = []
  train_and_evaluate(config, str(tmp_path / 'run'), on_log=lambda step, row: rows.append(row))
  lrs = [r['lr'] for r in rows if r['split'] == 'train']
  peak = config.learning_rate
  assert lrs == pytest.approx([peak] * 6 + [peak / 2] * 2)


# ----------------------------------------------------------------------------- clipping


def test_a_frozen_backbone_is_not_part_of_the_clipped_norm():
  import jax
  import optax

  from jaxformer.training import optim

  config = _optimizer_config(
    freeze_backbone=True, grad_clip_norm=1.0, warmup_steps=0, lr_schedule='constant'
  )
  params = _two_group_params()
  tx = optim.make_optimizer(config, params)
  head_only = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.adamw(1e-2, b1=config.adam_b1, b2=config.adam_b2, eps=1e-8, weight_decay=0.0),
  )
  state, head_state = tx.init(params), head_only.init(params['head'])
  for i, backbone_scale in enumerate((0.0, 1e3, 1.0)):  # a huge frozen gradient at update 2
    grads = _grads(jax.random.key(i), backbone_scale)
    updates, state = tx.update(grads, state, params)
    expected, head_state = head_only.update(grads['head'], head_state, params['head'])
    np.testing.assert_allclose(updates['head']['w'], expected['w'], rtol=1e-6)
    assert not np.any(updates['backbone']['w'])


# ---------------------------------------------------------------------- gradient accumulation


def test_micro_batches_interleave_rows_so_each_spans_every_data_shard():
  import re

  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from jaxformer.training.steps import micro_batches

  k, rows = 4, 32
  batch = {'inputs': np.arange(rows * 3).reshape(rows, 3), 'weights': np.arange(rows)}
  micro = micro_batches(batch, k)
  for i in range(k):  # micro-batch i = rows i, i + k, i + 2k, ...
    np.testing.assert_array_equal(micro['weights'][i], np.arange(rows)[i::k])
    np.testing.assert_array_equal(micro['inputs'][i], batch['inputs'][i::k])

  # Rows arrive as 8 contiguous blocks, one per data shard: each micro-batch keeps a part of
  # every block where it is, so it spans all 8 devices and nothing moves between them.
  mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  by_rows = NamedSharding(mesh, P('data'))
  split = jax.jit(lambda b: micro_batches(b, k), in_shardings=by_rows)
  sharded = jax.device_put(batch, by_rows)
  out = split(sharded)
  for leaf in jax.tree.leaves(out):
    assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, P(None, 'data')), leaf.ndim)
  hlo = split.lower(sharded).compile().as_text()
  assert not re.search(r'all-to-all|collective-permute|all-gather', hlo)


def test_pmap_refuses_rows_per_device_that_grad_accum_cannot_split(tmp_path):
  from helpers import run_train

  workdir = tmp_path / 'run'
  proc = run_train(
    '--config=configs/tiny.py',
    f'--workdir={workdir}',
    '--config.parallelism=pmap',
    '--config.batch_size=8',
    '--config.grad_accum_steps=2',
    devices=8,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.count('\n') == 1 and 'grad_accum_steps 2' in proc.stderr
  assert 'multiple of 16' in proc.stderr
  assert not workdir.exists()


# ----------------------------------------------------------------------------- throughput


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_tokens_per_s_counts_real_tokens_and_padding_is_reported_apart(tmp_path, monkeypatch):
  from jaxformer.training import report, train_and_evaluate
  from jaxformer.training.prepare import prepare

  monkeypatch.setattr(report, 'final_report', lambda s, params: {})  # decoding is not under test
  config = _tiny_run_config(
    task='translate', num_train_steps=3, eval_every_steps=3, eval_steps=1, log_every_steps=1
  )
  config.dataset.name, config.dataset.test_split = 'jaxformer_numbers/en_de', ''
  config.model.num_encoder_layers = config.model.num_decoder_layers = 1
  config.model.max_len = 64
  rows = []
  summary = train_and_evaluate(config, str(tmp_path / 'run'), on_log=lambda s, r: rows.append(r))
  train = [r for r in rows if r['split'] == 'train']

  it = prepare(config, str(tmp_path / 'run')).data.train_iterator()
  for row in train:  # one step per row: same seconds, so the ratio is exact
    batch = next(it)
    real = np.sum(batch['inputs'] != 0) + np.sum(batch['weights'] > 0)  # source + target
    padded = 2 * batch['inputs'].size
    assert real < 0.9 * padded
    assert row['tokens_per_s'] / row['padded_tokens_per_s'] == pytest.approx(real / padded)
  assert summary['tokens_per_s'] < 0.9 * summary['padded_tokens_per_s']


def test_real_tokens_leave_out_padding_for_every_task():
  from jaxformer.training.steps import real_tokens

  inputs = np.array([[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]])
  weights = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], np.float32)  # target + EOS
  assert float(real_tokens('classify', {'inputs': inputs, 'weights': np.ones(2)})) == 4
  assert float(real_tokens('translate', {'inputs': inputs, 'weights': weights})) == 4 + 6
  full = np.arange(1, 11).reshape(2, 5)
  assert float(real_tokens('lm', {'inputs': full, 'weights': np.ones((2, 5))})) == 10
