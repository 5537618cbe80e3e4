"""jaxformer.analysis: capture leaves outputs unchanged, attention maps are distributions,
head masks remove heads exactly, probes find planted features and nothing in shuffled labels."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import ModelConfig, analysis
from jaxformer.models import DecoderLM


def tiny(**kw):
  base = dict(vocab_size=32, d_model=16, num_heads=4, num_layers=2, max_len=16, dropout_rate=0.1)
  return ModelConfig(**{**base, **kw})


def random_params(cfg, seed=0):
  """Parameters of DecoderLM(cfg) filled with numpy noise (XLA compiles RNG code slowly on CPU)."""
  model = DecoderLM(cfg)
  abstract = nn.unbox(
    jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, cfg.max_len), jnp.int32))['params']
  )
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    return jnp.asarray(
      rng.normal(0.0, 0.3, leaf.shape) + (1.0 if path[-1].key == 'scale' else 0.0), leaf.dtype
    )

  return jax.tree_util.tree_map_with_path(fill, abstract)


def tokens(batch=3, length=16, seed=1):
  return jnp.asarray(np.random.default_rng(seed).integers(1, 32, (batch, length)), jnp.int32)


@pytest.fixture(scope='module')
def model():
  cfg = tiny()  # the default layout (a loop at 2 layers), as training produces
  return cfg, random_params(cfg)


def test_capture_does_not_change_logits(model):
  cfg, params = model
  x = tokens()
  plain = DecoderLM(cfg).apply({'params': params}, x)
  cap = analysis.capture(cfg, params, x)
  np.testing.assert_allclose(cap.logits, np.asarray(plain), atol=2e-5, rtol=2e-5)
  # Against the very same computation (einsum attention, layer loop) without capturing.
  acfg = analysis.analysis_config(cfg)
  same = jax.jit(DecoderLM(acfg).apply)({'params': analysis.loop_params(params)}, x)
  np.testing.assert_allclose(cap.logits, np.asarray(same), atol=1e-5, rtol=1e-5)
  assert cap.attention.shape == (cfg.num_layers, 3, cfg.num_heads, 16, 16)
  assert cap.hidden.shape == (cfg.num_layers + 1, 3, 16, cfg.d_model)


def test_attention_rows_sum_to_one_and_are_causal(model):
  cfg, params = model
  attention = analysis.capture(cfg, params, tokens()).attention
  np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
  above = np.triu(np.ones((16, 16), bool), k=1)
  assert np.all(attention[..., above] == 0.0)
  assert np.all(attention >= 0.0)


def test_hidden_zero_is_the_embedding(model):
  cfg, params = model
  x = tokens()
  hidden = analysis.capture(cfg, params, x).hidden
  backbone = params['backbone']
  expected = (
    np.asarray(backbone['token_embed']['embedding'])[np.asarray(x)]
    + np.asarray(backbone['pos_embed']['embedding'])[None, :16]
  )
  np.testing.assert_allclose(hidden[0], expected, atol=1e-6)
  assert not np.allclose(hidden[1], hidden[0])  # each layer adds to the residual stream


def test_masking_every_head_of_a_layer_removes_the_attention_sublayer(model):
  cfg, params = model
  x = tokens()
  mask = np.ones((cfg.num_layers, cfg.num_heads), np.float32)
  mask[1] = 0.0
  masked = DecoderLM(cfg).apply({'params': params}, x, head_mask=jnp.asarray(mask))
  # The same model with layer 1's attention sublayer deleted: its output projection (kernel
  # and bias) contributes zero, so the residual stream skips it.
  removed = jax.tree.map(np.array, params)
  out = removed['backbone']['layers']['layer_1']['self_attention']['out']
  for name in out:
    out[name][...] = 0.0
  reference = DecoderLM(cfg).apply({'params': removed}, x)
  np.testing.assert_allclose(np.asarray(masked), np.asarray(reference), atol=1e-5)
  plain = DecoderLM(cfg).apply({'params': params}, x)
  assert float(jnp.abs(masked - plain).max()) > 1e-3  # the mask did something


def test_head_ablation_and_pruning_curve(model):
  cfg, params = model
  x = np.asarray(tokens(2, 16))
  batches = [{'inputs': x[:, :-1], 'targets': x[:, 1:], 'weights': np.ones((2, 15), np.float32)}]
  out = analysis.head_ablation(cfg, params, batches)
  assert out['single_head'].shape == (cfg.num_layers, cfg.num_heads)
  order = [(layer, head) for layer in range(cfg.num_layers) for head in range(cfg.num_heads)]
  curve = analysis.pruning_curve(cfg, params, batches, order)
  assert len(curve) == len(order) + 1 and curve[0] == pytest.approx(out['baseline'])
  assert curve[cfg.num_heads] == pytest.approx(out['whole_layer'][0], rel=1e-5)


def test_window_losses_and_bootstrap_of_ablation_costs(model):
  cfg, params = model
  x = np.asarray(tokens(3, 16))
  weights = np.ones((3, 15), np.float32)
  weights[2, 10:] = 0.0  # a window with fewer scored tokens counts for fewer
  batches = [{'inputs': x[:, :-1], 'targets': x[:, 1:], 'weights': weights}]
  sums = analysis.window_sums(cfg, params, batches)
  assert sums.shape == (2, 3) and sums[1].tolist() == [15.0, 15.0, 10.0]
  assert sums[0].sum() / sums[1].sum() == pytest.approx(analysis.masked_loss(cfg, params, batches))
  out = analysis.head_ablation(cfg, params, batches)
  assert out['single_head_sums'].shape == (cfg.num_layers, cfg.num_heads, 2, 3)
  draws = analysis.bootstrap_deltas(out['baseline_sums'], out['single_head_sums'], draws=200)
  assert draws.shape == (200, cfg.num_layers, cfg.num_heads)
  delta = out['single_head'] - out['baseline']
  assert np.all(draws.min(0) <= delta + 1e-9) and np.all(delta <= draws.max(0) + 1e-9)
  # Known cases: the same cost in every window gives no spread; a cost in one window does.
  base = np.array([[3.0, 5.0, 4.0, 6.0], [2.0, 2.0, 2.0, 2.0]])
  flat = base + np.array([[1.0] * 4, [0.0] * 4])  # +0.5 nats per token everywhere
  lumpy = base + np.array([[4.0, 0, 0, 0], [0.0] * 4])  # +2 nats per token in one window
  out = analysis.bootstrap_deltas(base, np.stack([flat, lumpy]), draws=500)
  np.testing.assert_allclose(out[:, 0], 0.5)
  assert (
    out[:, 1].min() == 0.0
    and out[:, 1].max() > 1.0
    and out[:, 1].mean() == pytest.approx(0.5, abs=0.1)
  )


def test_paired_gaps_separate_heads_that_marginal_intervals_cannot():
  """Two heads share one lumpy window (a hard passage); head 0 costs 0.5 nats/token more in every
  window. Their own intervals overlap, yet every draw puts head 0 exactly 0.5 above head 1."""
  base = np.array([[3.0, 5.0, 4.0, 6.0, 3.0, 5.0, 4.0, 6.0], [2.0] * 8])
  lump = np.array([[8.0] + [0.0] * 7, [0.0] * 8])
  steady = np.array([[1.0] * 8, [0.0] * 8])
  draws = analysis.bootstrap_deltas(base, np.stack([base + lump + steady, base + lump]), draws=500)
  own = np.percentile(draws, [5, 95], axis=0)
  assert own[1, 1] > own[0, 0]  # the marginal intervals overlap: 'not distinguishable' there
  gap = analysis.paired_gaps(draws, (0,))
  np.testing.assert_allclose(gap[:, 0], 0.0)
  np.testing.assert_allclose(gap[:, 1], 0.5)
  grid = analysis.paired_gaps(draws.reshape(500, 1, 2), (0, 0))  # [draws, layers, heads]
  np.testing.assert_allclose(grid[:, 0, 1], 0.5)
  from jaxformer.experiments.heads import _ranking_text

  heads = [
    {'layer': 0, 'head': h, 'delta_loss': float(draws[:, h].mean()), 'most_important_share': s}
    | {'gap_to_top_90': gap[:, h].tolist()}
    for h, s in ((0, 1.0), (1, 0.0))
  ]
  assert 'every other head costs less' in _ranking_text(heads, {'bootstrap_draws': 500})


def test_head_stats_on_known_patterns():
  length = 8
  previous = np.zeros((1, 2, 1, length, length))
  previous[..., 0, 0] = 1.0
  for i in range(1, length):
    previous[..., i, i - 1] = 1.0
  stats = analysis.head_stats(previous)
  assert stats['previous_token'][0, 0] == pytest.approx(1.0)
  assert stats['mean_distance'][0, 0] == pytest.approx(1.0)
  assert stats['entropy'][0, 0] == pytest.approx(0.0)
  uniform = np.tril(np.ones((length, length)))
  uniform = (uniform / uniform.sum(-1, keepdims=True))[None, None, None]
  stats = analysis.head_stats(uniform)
  assert stats['entropy'][0, 0] == pytest.approx(stats['uniform_entropy'])
  assert stats['mean_distance'][0, 0] == pytest.approx(stats['uniform_mean_distance'])
  sim = analysis.attention_similarity(np.concatenate([previous[:, :1], previous[:, :1]], axis=2))
  np.testing.assert_allclose(sim, 1.0)


def test_induction_scores_and_copy_losses_on_known_patterns(model):
  period = 6
  tokens = analysis.repeated_random_tokens(3, period, 32, exclude=(0, 1, 2, 3), seed=1)
  assert tokens.shape == (3, 2 * period) and (tokens >= 4).all() and (tokens < 32).all()
  # Specials at the end of the vocabulary (GPT-2's BOS = EOS = 50257) are excluded just as well.
  late = analysis.repeated_random_tokens(4, 50, 10, exclude=(0, 8, 9))
  assert set(np.unique(late)) <= set(range(1, 8))
  np.testing.assert_array_equal(tokens[:, :period], tokens[:, period:])
  n = 2 * period
  induction = np.zeros((1, 3, 2, n, n))  # head 0 copies from context, head 1 looks one back
  for i in range(n):
    induction[..., 0, i, i - period + 1 if i >= period else 0] = 1.0
    induction[..., 1, i, max(i - 1, 0)] = 1.0
  scores = analysis.induction_scores(induction, period)
  assert scores.shape == (1, 2) and scores[0, 0] == pytest.approx(1.0) and scores[0, 1] == 0.0
  uniform = np.tril(np.ones((n, n)))
  uniform = (uniform / uniform.sum(-1, keepdims=True))[None, None, None]
  expected = np.mean([1 / (period + j + 1) for j in range(period - 1)])
  assert analysis.induction_scores(uniform, period)[0, 0] == pytest.approx(expected)
  # A model that predicts each token of the second copy from the first: zero loss there only.
  logits = np.zeros((3, n, 32))
  logits[:, period - 1 : n - 1][np.arange(3)[:, None], np.arange(period), tokens[:, period:]] = 50
  first, second = analysis.copy_losses(logits, tokens, period)
  assert first == pytest.approx(np.log(32), rel=1e-6) and second < 1e-6
  # On a real model the scores come from its captured attention: probabilities, one per head.
  cfg, params = model
  cap = analysis.capture(
    cfg, params, analysis.repeated_random_tokens(2, 8, cfg.vocab_size, exclude=(0,))
  )
  real = analysis.induction_scores(cap.attention, 8)
  assert real.shape == (cfg.num_layers, cfg.num_heads) and ((real >= 0) & (real <= 1)).all()


def test_probe_finds_planted_feature_and_not_shuffled_labels():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 24)).astype(np.float32)
  w = rng.normal(size=24)
  y = (x @ w > 0).astype(np.int32)
  planted = analysis.train_probe(x[:1000], y[:1000], x[1000:], y[1000:])
  assert planted['accuracy'] >= 0.97
  # The control task: the same labels shuffled across examples, so nothing links x to y.
  z = rng.permutation(y)
  shuffled = analysis.train_probe(x[:1000], z[:1000], x[1000:], z[1000:])
  assert abs(shuffled['balanced_accuracy'] - 0.5) < 0.06
  assert shuffled['chance_balanced'] == 0.5


def test_probe_rejects_empty_input():
  with pytest.raises(ValueError, match='at least one'):
    analysis.train_probe(np.zeros((0, 3)), np.zeros(0), np.zeros((2, 3)), np.zeros(2))
