"""The training library: early stopping, weight decay mask, gradient accumulation, schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax.training import early_stopping as flax_early_stopping
from jaxformer.configs import default

from jaxformer import ModelConfig
from jaxformer.models import Classifier, DecoderLM
from jaxformer.training import optim, steps
from jaxformer.training.callbacks import EarlyStopping


@pytest.mark.parametrize(
  'patience,losses,stop_at',
  [
    (1, [3.0, 2.0, 2.5, 1.0], 3),
    (2, [3.0, 2.0, 2.5, 2.4, 1.0], 4),
    (3, [3.0, 2.9, 2.95, 2.8, 2.85, 2.9, 2.99, 1.0], 7),
  ],
)
def test_early_stopping_stops_at_the_patience_th_bad_evaluation(patience, losses, stop_at):
  es = EarlyStopping(patience)
  stop = next(i + 1 for i, v in enumerate(losses) if es.on_eval(i, v))
  assert stop == stop_at
  assert es.best_value == min(losses[:stop_at]) and es.stopped


def test_flax_early_stopping_is_one_evaluation_later():
  # Documents why we don't use flax's: with patience 2 it needs a third bad evaluation.
  losses = [3.0, 2.0, 2.5, 2.4, 2.3]
  es = flax_early_stopping.EarlyStopping(patience=2)
  flax_stop = next(i + 1 for i, v in enumerate(losses) if (es := es.update(v)).should_stop)
  ours = EarlyStopping(2)
  our_stop = next(i + 1 for i, v in enumerate(losses) if ours.on_eval(i, v))
  assert (our_stop, flax_stop) == (4, 5)


def test_early_stopping_min_delta_and_state_round_trip():
  es = EarlyStopping(2, min_delta=0.1)
  assert not es.on_eval(1, 1.0)
  assert not es.on_eval(2, 0.95)  # better, but not by min_delta: a bad evaluation
  restored = EarlyStopping(2, min_delta=0.1)
  restored.load_state_dict(es.state_dict())
  assert restored.on_eval(3, 0.99) and restored.best_step == 1


def _tiny_lm(**overrides):
  cfg = ModelConfig(
    vocab_size=50, d_model=16, num_heads=2, num_layers=2, max_len=8, dropout_rate=0.0, **overrides
  )
  model = DecoderLM(cfg)
  params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))['params'])
  return cfg, model, params


def test_weight_decay_mask_excludes_biases_norms_and_embeddings():
  cfg = ModelConfig(
    vocab_size=50, d_model=16, num_heads=2, num_layers=2, max_len=8, tie_embeddings=False
  )
  # Only the tree's structure and shapes matter here: no need to run the initializers.
  params = nn.unbox(
    jax.eval_shape(DecoderLM(cfg).init, jax.random.key(0), jnp.ones((1, 8), jnp.int32))['params']
  )
  mask = optim.weight_decay_mask(params)
  flat = {
    jax.tree_util.keystr(p): (m, leaf.ndim)
    for (p, m), leaf in zip(jax.tree_util.tree_flatten_with_path(mask)[0], jax.tree.leaves(params))
  }
  decayed = [k for k, (m, _) in flat.items() if m]
  kept = [k for k, (m, _) in flat.items() if not m]
  assert decayed and kept
  assert all("'bias'" not in k and "'scale'" not in k for k in decayed)
  assert any("'kernel'" in k or 'kernel' in k for k in decayed)
  assert all(flat[k][1] >= 2 for k in decayed)
  assert any("'bias'" in k for k in kept) and any("'scale'" in k for k in kept)
  embeddings = [k for k in flat if 'embed' in k.split("'")[-2]]
  assert embeddings and all(not flat[k][0] for k in embeddings)
  with_emb = optim.weight_decay_mask(params, decay_embeddings=True)
  assert any(
    m
    for (p, m) in jax.tree_util.tree_flatten_with_path(with_emb)[0]
    if 'embed' in jax.tree_util.keystr(p).split("'")[-2]
  )


def _config(**kw):
  c = default.get_config()
  c.num_train_steps, c.warmup_steps, c.learning_rate = 10, 2, 1e-2
  for k, v in kw.items():
    c[k] = v
  return c


def _lm_batch(key, batch=8, length=8, vocab=50):
  tokens = jax.random.randint(key, (batch, length + 1), 1, vocab)
  weights = jnp.ones((batch, length)).at[:, -2:].set(0.0).at[0].set(0.0)  # uneven padding
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'weights': weights}


def test_gradient_accumulation_matches_one_big_batch():
  cfg, model, params = _tiny_lm()
  results = []
  for k in (1, 4):
    config = _config(grad_accum_steps=k)
    tx = optim.make_optimizer(config, params)
    state = {
      'step': jnp.zeros((), jnp.int32),
      'params': params,
      'opt_state': tx.init(params),
      'rng': jax.random.key(1),
    }
    step = jax.jit(steps.make_train_step(model, tx, task='lm', grad_accum_steps=k))
    batch = _lm_batch(jax.random.key(2))
    for _ in range(2):
      state, metrics = step(state, batch)
    results.append((state['params'], metrics))
  (p1, m1), (p4, m4) = results
  np.testing.assert_allclose(m1['loss_sum'], m4['loss_sum'], rtol=1e-5)
  np.testing.assert_allclose(m1['grad_norm'], m4['grad_norm'], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), p1, p4)


def test_loss_sums_ignore_padding_and_label_smoothing_floor():
  logits = jnp.log(jnp.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]]))
  targets = jnp.array([[0, 2]])
  loss, w, correct = steps.loss_sums(logits, targets, jnp.array([[1.0, 0.0]]))
  np.testing.assert_allclose(loss, -np.log(0.7), rtol=1e-6)
  assert float(w) == 1.0 and float(correct) == 1.0
  # A model that predicts the smoothed distribution exactly scores zero.
  eps = 0.1
  smooth = jnp.log(jnp.array([[1 - eps + eps / 3, eps / 3, eps / 3]]))
  loss_s, _, _ = steps.loss_sums(smooth, jnp.array([0]), jnp.ones(1), label_smoothing=eps)
  np.testing.assert_allclose(loss_s, 0.0, atol=1e-5)


def test_schedules_warm_up_then_decay():
  for kind in ('cosine', 'rsqrt', 'constant'):
    sched = optim.learning_rate_schedule(
      _config(lr_schedule=kind, num_train_steps=100, warmup_steps=10)
    )
    lrs = [float(sched(s)) for s in (0, 5, 9, 60, 99)]  # update 9 is the first at the peak
    assert 0 < lrs[0] <= lrs[1] < lrs[2] + 1e-12, kind
    np.testing.assert_allclose(lrs[2], 1e-2, rtol=1e-6)
    assert (lrs[4] < lrs[2]) == (kind != 'constant'), kind


def test_frozen_backbone_only_moves_the_head():
  cfg = ModelConfig(
    vocab_size=50, d_model=16, num_heads=2, num_layers=1, max_len=8, dropout_rate=0.0
  )
  model = Classifier(cfg, num_classes=3)
  params = nn.unbox(model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))['params'])
  tx = optim.make_optimizer(_config(freeze_backbone=True, warmup_steps=0), params)
  state = {
    'step': jnp.zeros((), jnp.int32),
    'params': params,
    'opt_state': tx.init(params),
    'rng': jax.random.key(1),
  }
  batch = {
    'inputs': jnp.ones((4, 8), jnp.int32),
    'targets': jnp.array([0, 1, 2, 0]),
    'weights': jnp.ones(4),
  }
  new, _ = jax.jit(steps.make_train_step(model, tx, task='classify'))(state, batch)
  same = jax.tree.map(
    lambda a, b: bool(jnp.all(a == b)), params['backbone'], new['params']['backbone']
  )
  assert all(jax.tree.leaves(same))
  assert not all(
    jax.tree.leaves(
      jax.tree.map(lambda a, b: bool(jnp.all(a == b)), params['head'], new['params']['head'])
    )
  )


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_user_callbacks_see_every_event_and_can_stop_training(tmp_path):
  from jaxformer.configs import tiny

  from jaxformer.training import train_and_evaluate

  class Recorder:
    def __init__(self):
      self.events = []

    def on_train_start(self, step):
      self.events.append(('start', step))

    def on_step(self, step, state):
      self.events.append(('step', step))

    def on_log(self, step, metrics):
      self.events.append(('log', step))

    def on_eval(self, step, val_loss):
      self.events.append(('eval', step))
      return step >= 10  # ask to stop at the second evaluation

    def on_train_end(self, step):
      self.events.append(('end', step))

  config = tiny.get_config()
  config.mesh_shape, config.sample_tokens, config.eval_every_steps = (1, 1), 0, 5
  rec = Recorder()
  summary = train_and_evaluate(config, str(tmp_path / 'run'), callbacks=[rec])
  assert rec.events[0] == ('start', 0) and rec.events[-1] == ('end', 10)
  assert [e for e in rec.events if e[0] == 'eval'] == [('eval', 5), ('eval', 10)]
  assert [s for kind, s in rec.events if kind == 'step'] == list(range(1, 11))
  assert summary['stopped_early'] and summary['last_step'] == 10


def test_monitored_value_error_prefers_accuracy_then_loss():
  from jaxformer.training.callbacks import monitored_value

  same_acc_high_loss = monitored_value({'loss': 1.2, 'accuracy': 0.6}, 'error')
  same_acc_low_loss = monitored_value({'loss': 0.9, 'accuracy': 0.6}, 'error')
  better_acc_bad_loss = monitored_value({'loss': 3.0, 'accuracy': 0.62}, 'error')
  assert better_acc_bad_loss < same_acc_low_loss < same_acc_high_loss
  assert abs(same_acc_low_loss - 0.4) < 1e-3
  assert monitored_value({'loss': 1.2, 'accuracy': 0.6}, 'loss') == 1.2
