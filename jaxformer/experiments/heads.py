"""heads: do different heads capture different information? Maps, statistics, ablation, redundancy.

On a trained Shakespeare LM: the --workdir run, else the default LM (configs/shakespeare_lm.py,
trained once into runs/experiments/shakespeare_lm; --workdir runs/shakespeare_lm reuses yours):
  1. attention maps of every (layer, head) on one passage of a held-out play (NAME_maps.png);
  2. per-head statistics over validation windows: entropy, mean distance, share of attention
     on the previous token and on the window's first token (jaxformer.analysis.head_stats);
  3. ablation: validation loss with each head alone masked (head_mask), and each whole layer;
  4. redundancy: cosine similarity between heads' attention patterns;
  5. pruning: remove heads from least to most important (by 3.) and watch the loss;
  6. induction: on random tokens repeated twice, the attention from each token of the second
     copy to the token after its first occurrence (jaxformer.analysis.induction_scores), and the
     loss inside each copy: a model that reads its context predicts the second copy far better.
"""

from __future__ import annotations

import numpy as np

from jaxformer import analysis, plotting
from jaxformer.experiments.common import Options, Result, eval_batches, lm_data, pct, pretrained_lm

QUESTION = 'Different heads capture different information.'
PASSAGE_START = 'To be, or not to be'  # Hamlet is a held-out play: the model never trained on it


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'map_tokens': 24,
      'stats_windows': 4,
      'ablation_batches': 1,
      'batch_size': 8,
      'tolerance': 0.01,
      'induction_period': 8,
      'induction_batch': 4,
      'bootstrap_draws': 100,
    }
  return {
    'map_tokens': 40,
    'stats_windows': 32,
    'ablation_batches': 6,
    'batch_size': 32,
    'tolerance': 0.01,
    'induction_period': 100,
    'induction_batch': 16,
    'bootstrap_draws': 1000,
  }


INDUCTION_THRESHOLD = 0.3  # of a head's attention on the token after the earlier occurrence


def _passage(data, tokenizer, length: int) -> list[int]:
  """`length` tokens of validation text, from Hamlet's soliloquy if the corpus has it."""
  for example in data.examples('validation'):
    at = example['text'].find(PASSAGE_START)
    if at >= 0:
      return tokenizer.encode(example['text'][at : at + 40 * length])[:length]
  return tokenizer.encode(data.examples('validation', limit=1)[0]['text'])[:length]


def _kind(stats, layer: int, head: int) -> str:
  """A one-word description of a head from its statistics (thresholds: half of its attention)."""
  if stats['previous_token'][layer, head] > 0.5:
    return 'previous-token'
  if stats['first_token'][layer, head] > 0.5:
    return 'first-token'
  if stats['self'][layer, head] > 0.5:
    return 'self'
  if stats['entropy'][layer, head] > 0.8 * stats['uniform_entropy']:
    return 'broad'
  return 'mixed'


def run(opts: Options) -> Result:
  s = _settings(opts.quick)
  pre = pretrained_lm(opts)
  cfg, params = pre.model_config, pre.params
  data = lm_data(pre, s['batch_size'])
  tok = data.tokenizer

  passage = _passage(data, tok, s['map_tokens'])
  maps = analysis.capture(cfg, params, np.asarray([passage])).attention[:, 0]  # [layers, H, L, L]
  labels = [tok.decode([t]).replace('\n', '\\n') or '·' for t in passage]

  windows = np.concatenate(
    [
      b['inputs']
      for b in eval_batches(data, 'validation', -(-s['stats_windows'] // s['batch_size']))
    ]
  )
  attention = analysis.capture(
    cfg, params, windows[: s['stats_windows']]
  ).attention  # [layers, B, H, L, L]
  stats = analysis.head_stats(attention)
  similarity = analysis.attention_similarity(attention)

  batches = eval_batches(data, 'validation', s['ablation_batches'])
  ablation = analysis.head_ablation(cfg, params, batches)
  delta = ablation['single_head'] - ablation['baseline']
  # Windows resampled: how sure is each cost, and the ranking, on this many windows?
  draws = analysis.bootstrap_deltas(
    ablation['baseline_sums'], ablation['single_head_sums'], s['bootstrap_draws']
  )  # [draws, layers, H]
  interval = np.percentile(draws, [5, 95], axis=0)  # [2, layers, H]
  top = np.unravel_index(np.argmax(delta), delta.shape)
  gap = analysis.paired_gaps(draws, top)  # [2, layers, H]: top's cost minus each head's
  top_share = np.bincount(draws.reshape(len(draws), -1).argmax(1), minlength=delta.size).reshape(
    delta.shape
  ) / len(draws)
  order = [
    tuple(int(i) for i in np.unravel_index(k, delta.shape)) for k in np.argsort(delta, axis=None)
  ]
  curve = analysis.pruning_curve(cfg, params, batches, order)
  limit = ablation['baseline'] * (1 + s['tolerance'])
  prunable = max(k for k, loss in enumerate(curve) if loss <= limit or k == 0)
  induction = _induction(cfg, params, tok, s)

  heads = [
    {
      'layer': l,
      'head': h,
      'kind': _kind(stats, l, h),
      'delta_loss': float(delta[l, h]),
      'delta_loss_90': [float(interval[0, l, h]), float(interval[1, l, h])],
      'most_important_share': float(top_share[l, h]),
      'gap_to_top_90': [float(gap[0, l, h]), float(gap[1, l, h])],
      'induction_score': float(induction['scores'][l][h]),
      **{
        k: float(stats[k][l, h])
        for k in ('entropy', 'mean_distance', 'previous_token', 'first_token', 'self')
      },
    }
    for l in range(cfg.num_layers)
    for h in range(cfg.num_heads)
  ]
  n = cfg.num_layers * cfg.num_heads
  pairs = sorted(
    ((float(similarity[i, j]), i, j) for i in range(n) for j in range(i + 1, n)), reverse=True
  )
  results = {
    'model': {
      'workdir': opts.lm_workdir(),
      'step': pre.step,
      'val_loss': pre.val_loss,
      'num_layers': cfg.num_layers,
      'num_heads': cfg.num_heads,
      'd_model': cfg.d_model,
    },
    'passage': tok.decode(passage),
    'heads': heads,
    'uniform_entropy': stats['uniform_entropy'],
    'uniform_mean_distance': stats['uniform_mean_distance'],
    'baseline_loss': ablation['baseline'],
    'whole_layer_loss': ablation['whole_layer'],
    'similarity': similarity,
    'most_similar_pairs': [
      {
        'a': f'L{i // cfg.num_heads}H{i % cfg.num_heads}',
        'b': f'L{j // cfg.num_heads}H{j % cfg.num_heads}',
        'cosine': c,
      }
      for c, i, j in pairs[:5]
    ],
    'pruning_order': [f'L{l}H{h}' for l, h in order],
    'pruning_curve': curve,
    'prunable_within_tolerance': prunable,
    'induction': induction,
  }
  figures = {
    '': _figure(cfg, stats, delta, similarity, ablation, curve, limit),
    'maps': plotting.plot_attention_grid(
      maps, labels, title=f'attention on: {tok.decode(passage)[:60]!r}...'
    ),
  }
  return Result(settings=s, results=results, answer=_answer(cfg, s, results), figures=figures)


def _induction(cfg, params, tok, s) -> dict:
  period = min(s['induction_period'], cfg.max_len // 2)
  specials = (tok.pad_id, tok.bos_id, tok.eos_id)  # random ids, never a special one
  tokens = analysis.repeated_random_tokens(
    s['induction_batch'], period, tok.vocab_size, exclude=specials
  )
  cap = analysis.capture(cfg, params, tokens)
  scores = analysis.induction_scores(cap.attention, period)
  first, second = analysis.copy_losses(cap.logits, tokens, period)
  return {
    'period': period,
    'scores': scores,
    'uniform_score': float(np.mean([1 / (period + j + 1) for j in range(period - 1)])),
    'threshold': INDUCTION_THRESHOLD,
    'heads': [f'L{l}H{h}' for l, h in zip(*np.nonzero(scores > INDUCTION_THRESHOLD), strict=True)],
    'copy_loss_first': first,
    'copy_loss_second': second,
  }


def _answer(cfg, s, r) -> str:
  heads = r['heads']
  kinds = {}
  for h in heads:
    kinds.setdefault(h['kind'], []).append(f'L{h["layer"]}H{h["head"]}')
  kind_text = '; '.join(f'{k}: {len(v)} ({", ".join(v)})' for k, v in sorted(kinds.items()))
  top = sorted(heads, key=lambda h: -h['delta_loss'])[:3]
  low = sorted(heads, key=lambda h: h['delta_loss'])[:3]
  base, total = r['baseline_loss'], cfg.num_layers * cfg.num_heads
  fmt = lambda h: (  # noqa: E731
    f'L{h["layer"]}H{h["head"]} ({h["delta_loss"]:+.3f}, 90% {h["delta_loss_90"][0]:+.3f} to '
    f'{h["delta_loss_90"][1]:+.3f})'
  )
  ents = [h['entropy'] for h in heads]
  pair = r['most_similar_pairs'][0]
  layer_text = ', '.join(f'layer {i}: {pct(x, base)}' for i, x in enumerate(r['whole_layer_loss']))
  return (
    f'Attention entropy per head ranges from {min(ents):.2f} to {max(ents):.2f} nats '
    f'(uniform causal attention: {r["uniform_entropy"]:.2f}). Heads by their statistics '
    '(previous-token / first-token / self: over half of the attention on that token; '
    f'broad: entropy above 80% of uniform; mixed: the rest) — {kind_text}.\n\n'
    f'Ablation on {s["ablation_batches"] * s["batch_size"]} validation windows '
    f'(baseline loss {base:.3f} nats/token): '
    f'removing one head changes the loss by {min(h["delta_loss"] for h in heads):+.3f} to '
    f'{max(h["delta_loss"] for h in heads):+.3f}. '
    f'Most important: {", ".join(fmt(h) for h in top)}; least: '
    f'{", ".join(fmt(h) for h in low)}. {_ranking_text(heads, s)} '
    f"Removing a whole layer's attention: {layer_text}.\n\n"
    f'Redundancy: the most similar pair is {pair["a"]}/{pair["b"]} (cosine {pair["cosine"]:.2f}). '
    f'Pruning from least to most important, {r["prunable_within_tolerance"]} of {total} heads '
    'can go before the '
    f'loss rises more than {100 * s["tolerance"]:.0f}% above baseline; removing all gives '
    f'{r["pruning_curve"][-1]:.3f} ({pct(r["pruning_curve"][-1], base)}).\n\n'
    + _induction_answer(r['induction'], heads)
  )


def _ranking_text(heads: list[dict], s: dict) -> str:
  """How firm the ranking is: the top head's share of bootstrap draws, and the heads whose paired
  gap to it (90% interval over the same resampled windows) reaches 0: not distinguishable."""
  name = lambda h: f'L{h["layer"]}H{h["head"]}'  # noqa: E731
  first = max(heads, key=lambda h: h['delta_loss'])
  rivals = [name(h) for h in heads if h is not first and h['gap_to_top_90'][0] <= 0.0]
  return (
    f'Resampling the windows ({s["bootstrap_draws"]} draws): {name(first)} is the most '
    f'important head in {100 * first["most_important_share"]:.0f}% of the draws; '
    + (
      f'not distinguishable from it (the 90% interval of the paired gap reaches 0): '
      f'{", ".join(rivals)}.'
      if rivals
      else 'every other head costs less than it in the 90% interval of the paired gap.'
    )
  )


def _induction_answer(ind: dict, heads: list[dict]) -> str:
  best = max(heads, key=lambda h: h['induction_score'])
  found = (
    f'induction heads (score above {ind["threshold"]}): {", ".join(ind["heads"])}'
    if ind['heads']
    else f'no head scores above {ind["threshold"]}'
  )
  return (
    f'Induction, on {ind["period"]} random tokens repeated once: {found}; the highest score is '
    f'L{best["layer"]}H{best["head"]} ({best["induction_score"]:.2f}; uniform attention '
    f'{ind["uniform_score"]:.3f}). Loss inside the first copy {ind["copy_loss_first"]:.2f} '
    f'nats/token, inside the second {ind["copy_loss_second"]:.2f}: '
    + (
      'the model copies from its context.'
      if ind['copy_loss_second'] < 0.5 * ind['copy_loss_first']
      else 'the model barely uses the repeat.'
    )
  )


def _figure(cfg, stats, delta, similarity, ablation, curve, limit):
  fig = plotting.figure(figsize=(18, 8))
  axes = fig.subplots(2, 4)
  rows = [f'L{l}' for l in range(cfg.num_layers)]
  cols = [f'H{h}' for h in range(cfg.num_heads)]
  panels = [
    ('entropy', 'entropy (nats)'),
    ('mean_distance', 'mean distance (tokens)'),
    ('previous_token', 'share on previous token'),
    ('first_token', 'share on first token'),
  ]
  limits = {
    'entropy': (0, stats['uniform_entropy']),
    'mean_distance': (0, stats['uniform_mean_distance']),
    'previous_token': (0, 1),
    'first_token': (0, 1),
  }
  for ax, (key, title) in zip(axes[0], panels):
    plotting.heatmap(
      ax,
      stats[key],
      row_labels=rows,
      col_labels=cols,
      title=title,
      vmin=limits[key][0],
      vmax=max(limits[key][1], float(np.max(stats[key]))),
    )
  plotting.heatmap(
    axes[1, 0],
    delta,
    row_labels=rows,
    col_labels=cols,
    cmap='Reds',
    fmt='{:+.3f}',
    title=f'loss increase when the head alone is masked\n(baseline {ablation["baseline"]:.3f})',
  )
  names = [f'L{l}H{h}' for l in range(cfg.num_layers) for h in range(cfg.num_heads)]
  plotting.heatmap(
    axes[1, 1],
    similarity,
    row_labels=names,
    col_labels=names,
    title='attention-pattern cosine similarity',
    fmt=None,
    vmin=0.0,
    vmax=1.0,
  )
  axes[1, 1].tick_params(labelsize=5)
  axes[1, 1].tick_params(axis='x', rotation=90)
  axes[1, 2].bar(range(cfg.num_layers), ablation['whole_layer'] - ablation['baseline'])
  axes[1, 2].set_xticks(range(cfg.num_layers), rows)
  axes[1, 2].set_title("loss increase without a layer's attention", fontsize=9)
  axes[1, 3].plot(range(len(curve)), curve, marker='o')
  axes[1, 3].axhline(limit, color='gray', ls='--', label='baseline + 1%')
  axes[1, 3].set_xlabel('heads removed (least important first)')
  axes[1, 3].set_ylabel('validation loss')
  axes[1, 3].set_title('pruning curve', fontsize=9)
  axes[1, 3].legend(fontsize=7)
  for ax in axes[1, 2:]:
    ax.grid(alpha=0.3)
  return fig
