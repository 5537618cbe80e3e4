"""One train step and one eval step for every task: the task only changes how a batch is fed.

The train state is a plain dict, so it checkpoints as it is:
  {'step': int32[], 'params': pytree, 'opt_state': pytree, 'rng': key}

Both steps are pure functions of (state, batch). Dropout draws from
`fold_in(rng, step)`, so any step's randomness is reproducible after a resume. Under pmap
(`axis_name` set) the device index is folded in too, so replicas draw different masks, and
sums are reduced over devices before the division, which makes pmap equal to one big batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

State = dict[str, Any]
Batch = dict[str, jax.Array]


def apply_model(model, params, batch: Batch, *, task: str, deterministic: bool, rng=None):
  """Logits for a batch: [batch, length, vocab] for lm/translate, [batch, classes] to classify."""
  rngs = None if deterministic else {'dropout': rng}
  if task == 'translate':
    packed = 'inputs_segmentation' in batch  # dataset.pack: several examples a row
    return model.apply(
      {'params': params},
      batch['inputs'],
      batch['decoder_inputs'],
      deterministic=deterministic,
      rngs=rngs,
      packing={k: v for k, v in batch.items() if k.endswith(('_segmentation', '_position'))}
      if packed
      else None,
    )
  if 'inputs_segmentation' in batch:  # a packed LM row (dataset.pack)
    return model.apply(
      {'params': params},
      batch['inputs'],
      segments=batch['inputs_segmentation'],
      positions=batch['inputs_position'],
      deterministic=deterministic,
      rngs=rngs,
    )
  return model.apply({'params': params}, batch['inputs'], deterministic=deterministic, rngs=rngs)


def loss_sums(logits, targets, weights, label_smoothing: float = 0.0, num_classes=None):
  """Masked cross-entropy, summed: (loss_sum, weight_sum, correct_sum), all float32 scalars.

  Works for token targets (logits [B, L, V], targets/weights [B, L]) and for labels
  (logits [B, C], targets/weights [B]). Sums rather than means, so micro-batches, devices and
  evaluation batches combine exactly before the one division at the end. num_classes: the real
  classes when V is a padded vocabulary (the model masks the rest); label smoothing spreads its
  mass over these only. None: all V.
  """
  logits = logits.astype(jnp.float32)
  width = logits.shape[-1]
  num_classes = width if num_classes is None else num_classes
  if not label_smoothing:
    # Integer labels: no [B, L, V] one-hot operand to build and multiply (about 2% of a step
    # on CPU).
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  else:
    low = label_smoothing / num_classes
    smoothed = jax.nn.one_hot(targets, width) * (1.0 - label_smoothing) + low * (
      jnp.arange(width) < num_classes
    )
    loss = optax.softmax_cross_entropy(logits, smoothed)
    # Subtract the smoothed distribution's own entropy so a perfect model scores 0.
    high = 1.0 - label_smoothing + low
    floor = -(high * jnp.log(high) + (num_classes - 1) * low * jnp.log(low))
    loss = loss - floor
  weights = weights.astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return jnp.sum(loss * weights), jnp.sum(weights), jnp.sum(correct * weights)


def real_classes(model, task: str) -> int | None:
  """The unpadded vocabulary of an LM or translation model's logits; None to classify."""
  cfg = getattr(model, 'cfg', None)
  return None if task == 'classify' or cfg is None else cfg.vocab_size


def all_finite(tree) -> jax.Array:
  """bool[]: no NaN or Inf in any floating-point leaf of `tree`."""
  flags = [
    jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def state_is_finite(tx: optax.GradientTransformation, params, opt_state) -> jax.Array:
  """bool[]: the parameters and the optimizer's per-parameter leaves (Adam's moments) are finite.

  Other optimizer leaves may be infinite by design: reduce_on_plateau's best value starts at inf.
  """
  moments = optax.tree_utils.tree_map_params(
    tx, lambda x: x, opt_state, transform_non_params=lambda _: None
  )
  return all_finite((params, moments))


def make_train_step(
  model,
  tx: optax.GradientTransformation,
  *,
  task: str,
  grad_accum_steps: int = 1,
  label_smoothing: float = 0.0,
  axis_name: str | None = None,
  learning_rates: Callable[[jax.Array, Any], dict] | None = None,
  trainable: Any | None = None,
) -> Callable[[State, Batch], tuple[State, dict]]:
  """Builds `train_step(state, batch) -> (state, metrics)`; metrics stay on the device as sums.

  `learning_rates(step, opt_state)` (optim.applied_learning_rates) adds the rates this update
  applies to the metrics. `trainable` (optim.trainable_mask: a tree of bools like the params, or
  None for all) stops the gradients of frozen parameters: their gradients are zeros and the
  backward pass skips the matmuls that would compute them (head-only and LoRA fine-tuning).
  """
  num_classes = real_classes(model, task)

  def sums_and_grads(params, batch, key):
    def loss_fn(p):
      if trainable is not None:
        p = jax.tree.map(lambda x, t: x if t else jax.lax.stop_gradient(x), p, trainable)
      logits = apply_model(model, p, batch, task=task, deterministic=False, rng=key)
      loss_sum, w, correct = loss_sums(
        logits, batch['targets'], batch['weights'], label_smoothing, num_classes
      )
      return loss_sum, (w, correct)

    (loss_sum, (w, correct)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, jnp.stack([loss_sum, w, correct])

  def train_step(state: State, batch: Batch):
    params = state['params']
    key = jax.random.fold_in(state['rng'], state['step'])
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))

    if grad_accum_steps == 1:
      grads, sums = sums_and_grads(params, batch, key)
    else:
      # A scan over micro-batches, summing gradients of summed losses, so the result equals one
      # big batch exactly (up to float rounding).
      micro = micro_batches(batch, grad_accum_steps)

      def body(carry, xs):
        i, mb = xs
        g, s = sums_and_grads(params, mb, jax.random.fold_in(key, i))
        return jax.tree.map(jnp.add, carry, (g, s)), None

      zeros = (jax.tree.map(jnp.zeros_like, params), jnp.zeros(3, jnp.float32))
      (grads, sums), _ = jax.lax.scan(body, zeros, (jnp.arange(grad_accum_steps), micro))

    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
      if trainable is None:
        grads = jax.lax.psum(grads, axis_name)
      else:  # a frozen gradient is zero on every device: summing it would only move bytes
        grads = jax.tree.map(lambda g, t: jax.lax.psum(g, axis_name) if t else g, grads, trainable)
    loss_sum, weight_sum, correct_sum = sums[0], sums[1], sums[2]
    denom = jnp.maximum(weight_sum, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grads)
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    new_state = dict(
      state,
      step=state['step'] + 1,
      params=optax.apply_updates(params, updates),
      opt_state=opt_state,
    )
    metrics = {
      'loss_sum': loss_sum,
      'weight_sum': weight_sum,
      'correct_sum': correct_sum,
      'grad_norm': optax.tree.norm(grads),
      # Checked with the other metrics before any checkpoint is written: an update can overflow
      # the parameters even when the loss and gradients it came from were finite.
      'state_finite': state_is_finite(tx, new_state['params'], new_state['opt_state']),
    }
    if learning_rates is not None:
      metrics.update(learning_rates(state['step'], state['opt_state']))
    metrics['real_tokens'] = real_tokens(task, batch)
    if axis_name is not None:
      metrics['real_tokens'] = jax.lax.psum(metrics['real_tokens'], axis_name)
    return new_state, metrics

  return train_step


def micro_batches(batch: Batch, k: int) -> Batch:
  """[k * b, ...] -> [k, b, ...] with micro-batch i = rows i, i + k, i + 2k, ...

  Interleaved rather than contiguous: rows arrive in contiguous blocks per data shard (and per
  host), so row i of every block of k lands in micro-batch i, and each micro-batch spans all
  shards instead of sitting on a k-th of them.
  """
  return jax.tree.map(lambda x: x.reshape((-1, k) + x.shape[1:]).swapaxes(0, 1), batch)


def make_eval_step(model, *, task: str, axis_name: str | None = None):
  """Builds `eval_step(params, batch) -> sums` with dropout off; padded rows have weight 0."""

  def eval_step(params, batch: Batch):
    logits = apply_model(model, params, batch, task=task, deterministic=True)
    sums = jnp.stack(loss_sums(logits, batch['targets'], batch['weights']))
    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
    return sums

  return eval_step


def make_predict_step(model, *, task: str):
  """`predict(params, batch) -> argmax predictions` (class ids, or next-token ids)."""

  def predict(params, batch: Batch):
    return jnp.argmax(apply_model(model, params, batch, task=task, deterministic=True), -1)

  return predict


def real_tokens(task: str, batch) -> jnp.ndarray:
  """Non-padding tokens a batch feeds through the model (`tokens_per_s` counts these).

  Pipelines pad with id 0, every tokenizer's pad_id. A translation's decoder reads one position
  per target token (BOS + target[:-1] predicts target), so its weights count them.
  """
  count = jnp.sum(batch['inputs'] != 0)
  if task == 'translate':
    count = count + jnp.sum(batch['weights'] > 0)
  return count.astype(jnp.float32)
