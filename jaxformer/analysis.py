"""Look inside a trained DecoderLM: attention maps, per-layer hidden states, head ablation, probes.

Everything takes a ModelConfig and a parameter tree, so it works on any run, in a notebook too:

    pre = jaxformer.load_pretrained('runs/shakespeare_lm')
    cap = capture(pre.model_config, pre.params, tokens)     # tokens int32[B, L]
    cap.attention   # [layers, B, H, L, L]  softmax rows; causal, so zero above the diagonal
    cap.hidden      # [layers + 1, B, L, D] residual stream: embeddings, then after each layer
    head_stats(cap.attention)                  # entropy, distance, previous/first-token share
    induction_scores(capture(cfg, params, repeated_random_tokens(...)).attention, period)
    masked_loss(cfg, params, batches, mask)    # validation loss with some heads removed
    train_probe(x_train, y_train, x_test, y_test)   # linear probe: is a property decodable?

Capturing never changes what the model computes: it runs the same parameters with
attention_impl='einsum' (which sows the probabilities) and a plain layer loop (so every layer's
output has its own name); the logits it returns equal the normal forward pass.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxformer.config import ModelConfig
from jaxformer.metrics import balanced_accuracy
from jaxformer.model import DecoderLM, TransformerLayer, scan_to_loop
from jaxformer.model.layers import AddPositions

# ----------------------------------------------------------------------------- capture


@dataclasses.dataclass
class Capture:
  logits: np.ndarray  # [B, L, V] float32, equal to DecoderLM(cfg).apply(params, tokens)
  attention: np.ndarray  # [layers, B, H, Lq, Lk] attention probabilities of every head
  hidden: (
    np.ndarray
  )  # [layers + 1, B, L, D]: hidden[0] = embeddings (+ positions), hidden[i] = after layer i


def analysis_config(cfg: ModelConfig) -> ModelConfig:
  """The same model with explicit (einsum) attention, a layer loop and no rematerialisation."""
  return cfg.replace(attention_impl='einsum', scan_layers=False, remat='none')


def loop_params(params):
  """Parameters in layer-loop layout ('layer_0', 'layer_1', ...), whatever layout they came in."""
  return scan_to_loop(nn.unbox(params))


def _records_hidden(module, method_name: str) -> bool:
  # The outputs of each layer, of the token table and of the position step: nothing else is
  # stored, so capturing costs little memory.
  return method_name == '__call__' and isinstance(
    module, (TransformerLayer, AddPositions, nn.Embed)
  )


@functools.lru_cache(maxsize=8)
def _capture_fn(cfg: ModelConfig):
  model = DecoderLM(cfg)

  def run(params, tokens, head_mask):
    logits, state = model.apply(
      {'params': params},
      tokens,
      head_mask=head_mask,
      capture_intermediates=_records_hidden,
      mutable=['intermediates'],
    )
    inter = state['intermediates']['backbone']
    layers = [inter['layers'][f'layer_{i}'] for i in range(cfg.num_layers)]
    attention = jnp.stack([layer['self_attention']['attention_weights'][0] for layer in layers])
    first = inter['pos_embed'] if 'pos_embed' in inter else inter['token_embed']
    # A TransformerLayer returns (x, None), the (carry, output) pair nn.scan expects.
    hidden = jnp.stack([first['__call__'][0]] + [layer['__call__'][0][0] for layer in layers])
    return logits, attention, hidden

  return jax.jit(run)


def capture(cfg: ModelConfig, params, tokens, *, head_mask=None) -> Capture:
  """Logits, every head's attention probabilities and every layer's output for tokens [B, L]."""
  acfg = analysis_config(cfg)
  mask = None if head_mask is None else jnp.asarray(head_mask, jnp.float32)
  logits, attention, hidden = _capture_fn(acfg)(
    loop_params(params), jnp.asarray(tokens, jnp.int32), mask
  )
  return Capture(np.asarray(logits), np.asarray(attention), np.asarray(hidden))


def hidden_states(cfg: ModelConfig, params, tokens, batch_size: int = 32) -> np.ndarray:
  """[layers + 1, N, L, D] hidden states for tokens [N, L], computed batch_size rows at a time."""
  tokens = np.asarray(tokens)
  parts = [
    capture(cfg, params, tokens[i : i + batch_size]).hidden
    for i in range(0, len(tokens), batch_size)
  ]
  return np.concatenate(parts, axis=1)


# ----------------------------------------------------------------------------- attention statistics


def head_stats(attention) -> dict:
  """Per-head statistics of causal attention maps [layers, B, H, L, L], each [layers, H].

  Averaged over the batch and over query positions 1..L-1 (query 0 can only see itself):
    entropy          -sum_j p_ij ln p_ij, nats (low = focused on few tokens)
    mean_distance    sum_j p_ij (i - j), tokens back from the query
    previous_token   p_{i, i-1}: share of attention on the token just before
    first_token      p_{i, 0}: share on the window's first token (a common "attention sink")
    self             p_{i, i}: share on the query token itself
  The same numbers for uniform causal attention are returned as 'uniform_*' references.
  """
  a = np.asarray(attention, np.float64)[..., 1:, :]  # [layers, B, H, L-1, L]
  length = a.shape[-1]
  q = np.arange(1, length)[:, None]
  k = np.arange(length)[None, :]
  rows = np.arange(length - 1)
  mean = lambda x: x.mean(axis=(1, 3))  # noqa: E731  over batch and queries -> [layers, H]
  uniform_counts = np.arange(2, length + 1)  # query i sees i + 1 keys
  return {
    'entropy': mean(-(a * np.log(np.where(a > 0, a, 1.0))).sum(-1)),
    'mean_distance': mean((a * (q - k)).sum(-1)),
    'previous_token': mean(a[..., rows, rows]),
    'first_token': mean(a[..., 0]),
    'self': mean(a[..., rows, rows + 1]),
    'uniform_entropy': float(np.mean(np.log(uniform_counts))),
    'uniform_mean_distance': float(np.mean((uniform_counts - 1) / 2)),
  }


def attention_similarity(attention) -> np.ndarray:
  """[layers * H, layers * H] cosine similarity between heads' attention maps (1 = same pattern).

  attention: [layers, B, H, L, L]; head (layer l, head h) is row l * H + h. Each head's maps over
  the whole batch are flattened into one vector, so two heads are similar only if they attend
  the same way on the same inputs.
  """
  a = np.asarray(attention, np.float64)
  layers, _, heads = a.shape[:3]
  flat = a.transpose(0, 2, 1, 3, 4).reshape(layers * heads, -1)
  flat = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
  return flat @ flat.T


def repeated_random_tokens(
  batch: int, period: int, vocab_size: int, exclude=(), seed: int = 0
) -> np.ndarray:
  """[batch, 2 * period] int32: `period` uniform random ids below vocab_size, none of them in
  `exclude` (padding, BOS, EOS: wherever a tokenizer puts them), then the same again.

  Random ids have no statistics a model could have learned, so the second copy is predictable
  only by looking back at the first: the standard probe for induction heads.
  """
  ids = np.setdiff1d(np.arange(vocab_size), np.asarray(exclude, np.int64))
  first = np.random.default_rng(seed).choice(ids, (batch, period))
  return np.concatenate([first, first], axis=1).astype(np.int32)


def induction_scores(attention, period: int) -> np.ndarray:
  """[layers, H] attention from each token of the second copy to the token that FOLLOWED its
  earlier occurrence (query period + j -> key j + 1), averaged over j and the batch.

  attention: [layers, B, H, 2 * period, 2 * period] on repeated_random_tokens. An induction head
  scores near 1 ("what came after this token last time comes next"); uniform causal attention
  scores about 1 / (1.5 * period), a previous-token head 0.
  """
  a = np.asarray(attention, np.float64)
  j = np.arange(period - 1)
  return a[..., period + j, j + 1].mean(axis=(1, 3))


def copy_losses(logits, tokens, period: int) -> tuple[float, float]:
  """Mean next-token loss (nats) inside the first and inside the second copy of
  repeated_random_tokens: a model that copies from context predicts the second far better."""
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
  nll = -np.asarray(jnp.take_along_axis(logp[:, :-1], jnp.asarray(tokens)[:, 1:, None], -1))[..., 0]
  return float(nll[:, : period - 1].mean()), float(nll[:, period:].mean())


# ----------------------------------------------------------------------------- head ablation


@functools.lru_cache(maxsize=8)
def _loss_fn(cfg: ModelConfig):
  model = DecoderLM(cfg)

  def sums(params, batch, head_mask):
    """[2, B]: each window's summed loss and its number of scored tokens."""
    logits = model.apply({'params': params}, batch['inputs'], head_mask=head_mask)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['targets'])
    return jnp.stack([jnp.sum(loss * batch['weights'], -1), jnp.sum(batch['weights'], -1)])

  return jax.jit(sums)


def window_sums(cfg: ModelConfig, params, batches, head_mask=None) -> np.ndarray:
  """[2, N]: summed next-token loss (nats) and scored tokens of each of the N windows in LM
  batches {'inputs', 'targets', 'weights'}, with a head mask [num_layers, num_heads] (1 keeps a
  head, 0 removes it; None keeps all). Per window, so a bootstrap can resample windows."""
  mask = (
    jnp.ones((cfg.num_layers, cfg.num_heads))
    if head_mask is None
    else jnp.asarray(head_mask, jnp.float32)
  )
  fn, params = _loss_fn(cfg.replace(remat='none')), nn.unbox(params)
  parts = [fn(params, {k: jnp.asarray(v) for k, v in b.items()}, mask) for b in batches]
  return np.concatenate([np.asarray(p, np.float64) for p in parts], axis=1)


def masked_loss(cfg: ModelConfig, params, batches, head_mask=None) -> float:
  """Mean next-token loss (nats) over LM batches with a head mask (see window_sums)."""
  loss_sum, weight = window_sums(cfg, params, batches, head_mask).sum(axis=1)
  return float(loss_sum / max(weight, 1.0))


def bootstrap_deltas(base: np.ndarray, ablated: np.ndarray, draws: int = 1000, seed: int = 0):
  """Loss increases over the baseline, recomputed on windows resampled with replacement.

  base [2, N] and ablated [..., 2, N] are window_sums; returns [draws, ...]: the spread of these
  says which ablation costs are distinguishable on this many windows.
  """
  pick = np.random.default_rng(seed).integers(0, base.shape[1], (draws, base.shape[1]))

  def mean(sums):  # [..., 2, N] -> [..., draws]: the token-weighted mean loss of each draw
    return sums[..., 0, pick].sum(-1) / np.maximum(sums[..., 1, pick].sum(-1), 1.0)

  return np.moveaxis(mean(np.asarray(ablated)) - mean(np.asarray(base)), -1, 0)


def paired_gaps(draws: np.ndarray, top: tuple[int, ...], level: float = 90.0) -> np.ndarray:
  """[2, ...]: the `level`% interval of (cost of head `top`) - (cost of each head), over the draws
  of bootstrap_deltas [draws, ...].

  Paired: each draw scores both heads on the same resampled windows, so what the windows have in
  common (a hard passage raises every head's cost) cancels. A head is distinguishable from `top`
  when its interval lies above 0; comparing the two heads' own intervals instead calls heads
  indistinguishable whenever the windows' shared spread is wider than the gap.
  """
  top_cost = draws[(slice(None), *top)].reshape(-1, *[1] * (draws.ndim - 1))  # [draws, 1, ...]
  gaps = top_cost - draws
  tail = (100.0 - level) / 2
  return np.percentile(gaps, [tail, 100.0 - tail], axis=0)


def head_ablation(cfg: ModelConfig, params, batches) -> dict:
  """Loss with nothing removed, with each head alone removed [layers, H], and with each whole
  layer's attention removed; 'single_head_sums' [layers, H, 2, N] and 'baseline_sums' [2, N]
  keep the per-window numbers for bootstrap_deltas.

  The increase over 'baseline' is how much the model relies on that head (on these batches).
  """
  base_sums = window_sums(cfg, params, batches)
  base = float(base_sums[0].sum() / max(base_sums[1].sum(), 1.0))
  single_sums = np.zeros((cfg.num_layers, cfg.num_heads, *base_sums.shape))
  for layer in range(cfg.num_layers):
    for head in range(cfg.num_heads):
      mask = np.ones((cfg.num_layers, cfg.num_heads))
      mask[layer, head] = 0.0
      single_sums[layer, head] = window_sums(cfg, params, batches, mask)
  single = single_sums[..., 0, :].sum(-1) / np.maximum(single_sums[..., 1, :].sum(-1), 1.0)
  whole = np.zeros(cfg.num_layers)
  for layer in range(cfg.num_layers):
    mask = np.ones((cfg.num_layers, cfg.num_heads))
    mask[layer] = 0.0
    whole[layer] = masked_loss(cfg, params, batches, mask)
  return {
    'baseline': base,
    'single_head': single,
    'whole_layer': whole,
    'baseline_sums': base_sums,
    'single_head_sums': single_sums,
  }


def pruning_curve(cfg: ModelConfig, params, batches, order) -> list[float]:
  """Loss after removing the first k heads of `order` ((layer, head) pairs), k = 0..len(order)."""
  mask = np.ones((cfg.num_layers, cfg.num_heads))
  losses = [masked_loss(cfg, params, batches, mask)]
  for layer, head in order:
    mask[layer, head] = 0.0
    losses.append(masked_loss(cfg, params, batches, mask))
  return losses


# ----------------------------------------------------------------------------- linear probes


@functools.partial(jax.jit, static_argnames=('num_classes', 'steps'))
def _fit_logistic(x, y, *, num_classes: int, steps: int, l2: float, learning_rate: float):
  """Full-batch multinomial logistic regression with an L2 penalty, by Adam. x: [N, D], y: [N]."""
  params = {'w': jnp.zeros((x.shape[1], num_classes)), 'b': jnp.zeros(num_classes)}
  tx = optax.adam(learning_rate)

  def loss_fn(p):
    logits = x @ p['w'] + p['b']
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + l2 * jnp.sum(
      p['w'] ** 2
    )

  def step(carry, _):
    p, opt = carry
    grads = jax.grad(loss_fn)(p)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  return params


def train_probe(
  x_train,
  y_train,
  x_test,
  y_test,
  *,
  num_classes: int | None = None,
  l2: float = 1e-3,
  steps: int = 300,
  learning_rate: float = 0.05,
) -> dict:
  """A linear probe: logistic regression from features [N, D] to integer labels [N].

  Features are standardised with the training set's mean and std. Returns test 'accuracy',
  'balanced_accuracy', 'train_accuracy', and the chance levels 'majority_accuracy' (always
  predicting the commonest training class) and 'chance_balanced' (1 / classes in the test set).
  Plain JAX + optax: no scikit-learn needed.
  """
  x_train, x_test = np.asarray(x_train, np.float32), np.asarray(x_test, np.float32)
  y_train, y_test = np.asarray(y_train, np.int32), np.asarray(y_test, np.int32)
  if len(x_train) == 0 or len(x_test) == 0:
    raise ValueError(
      'train_probe needs at least one training and one test example; collect more data'
    )
  num_classes = int(num_classes or max(y_train.max(), y_test.max()) + 1)
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  p = _fit_logistic(
    jnp.asarray((x_train - mean) / std),
    jnp.asarray(y_train),
    num_classes=num_classes,
    steps=int(steps),
    l2=float(l2),
    learning_rate=float(learning_rate),
  )
  predict = lambda x: np.asarray(jnp.argmax(jnp.asarray((x - mean) / std) @ p['w'] + p['b'], -1))  # noqa: E731
  pred_test = predict(x_test)
  majority = np.bincount(y_train, minlength=num_classes).argmax()
  return {
    'accuracy': float(np.mean(pred_test == y_test)),
    'balanced_accuracy': balanced_accuracy(y_test, pred_test),
    'train_accuracy': float(np.mean(predict(x_train) == y_train)),
    'majority_accuracy': float(np.mean(y_test == majority)),
    'chance_balanced': 1.0 / len(np.unique(y_test)),
    'num_train': int(len(y_train)),
    'num_test': int(len(y_test)),
    'num_classes': num_classes,
  }
