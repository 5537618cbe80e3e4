"""depth: what does each layer of a trained LM represent, and is depth worth its parameters?

1. Linear probes (jaxformer.analysis.train_probe) on the residual stream after every layer of
   the --workdir LM (default: the default LM of configs/shakespeare_lm.py, trained once and
   cached; layer 0 = embeddings), for
     token        the current token's identity (its K most frequent values)
     line_start   whether a line starts at this token
     line_pos     the token's position within its line (0, 1, 2, 3-4, 5-7, 8+)
     next_token   the next token's identity (the model's own task; K most frequent values)
     genre        comedy / history / tragedy of a passage (mean over its tokens), trained on
                  passages of training plays and tested on held-out plays
   Token probes train on the first 2/3 of the validation windows and test on the rest. The same
   probes on the same architecture with random weights are the control: what a probe reads from
   an untrained network is not something the LM learned.
2. Validation loss against depth at a fixed non-embedding parameter budget: the small LM of the
   sweeps (common.small_lm_config) with num_layers in `depths`, d_model chosen so
   12 * layers * d_model^2 stays (about) constant, trained from scratch with seeds 0, 1, 2. The
   answer gives each depth's mean ± std and says which gaps the seeds cannot tell apart; the
   4-layer runs are ffn_width's mlp_ratio 4 runs, shared through their labels.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from jaxformer import analysis, plotting
from jaxformer.experiments import seeds
from jaxformer.experiments.common import (
  Options,
  Result,
  eval_batches,
  lm_data,
  numpy_init,
  pretrained_lm,
  small_lm_config,
  small_lm_over_seeds,
  whole_split,
)

QUESTION = (
  'Lower layers learn lexical and syntactic patterns, middle layers semantics, top layers the task.'
)
PROPERTIES = ('token', 'line_start', 'line_pos', 'next_token', 'genre')
LINE_POS_BUCKETS = (0, 1, 2, 3, 5, 8)  # bucket b holds positions in [edge_b, edge_{b+1})


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'probe_windows': 6,
      'top_k': 8,
      'genre_batches': 2,
      'batch_size': 8,
      'probe_steps': 100,
      'depths': [1, 2],
      'seeds': [0, 1],  # two, so the quick path takes the spread too
    }
  return {
    'probe_windows': 48,
    'top_k': 20,
    'genre_batches': 0,
    'batch_size': 32,
    'probe_steps': 300,
    'depths': [1, 2, 4, 8],
    'seeds': [0, 1, 2],
  }


def width_for_budget(budget: int, num_layers: int, num_heads: int, mlp_ratio: float = 4.0) -> int:
  """d_model (a multiple of num_heads) with num_layers * (4 + 2 * mlp_ratio) * d^2 closest to
  budget."""
  per_layer = 4 + 2 * mlp_ratio
  d = math.sqrt(budget / (num_layers * per_layer))
  candidates = [max(num_heads, num_heads * f(d / num_heads)) for f in (math.floor, math.ceil)]
  return min(candidates, key=lambda c: abs(num_layers * per_layer * c * c - budget))


# ----------------------------------------------------------------------------- probe labels


def token_labels(windows, tokenizer, top_k: int) -> dict:
  """Per-token labels for windows [N, L]; each value is (mask [N, L], labels [N, L])."""
  pieces = {int(t): tokenizer.decode([int(t)]) for t in np.unique(windows)}
  newline = np.vectorize(lambda t: '\n' in pieces[int(t)])(windows)
  n, length = windows.shape
  line_start = np.zeros((n, length), bool)
  line_pos = np.full((n, length), -1)
  for i in range(n):
    last = None  # index of the latest newline token
    for p in range(length):
      if last is not None:
        line_pos[i, p] = p - last - 1
      if newline[i, p]:
        last = p
    line_start[i, 1:] = newline[i, :-1]
  has_previous = np.broadcast_to(np.arange(length) >= 1, (n, length))
  known = (line_pos >= 0) & ~newline  # inside a line, after a newline we saw
  out = {
    'line_start': (has_previous & ~newline, line_start.astype(int)),
    'line_pos': (
      known,
      np.searchsorted(LINE_POS_BUCKETS, np.maximum(line_pos, 0), side='right') - 1,
    ),
  }
  has_next = np.broadcast_to(np.arange(length) < length - 1, (n, length))
  for name, ids, valid in (
    ('token', windows, np.ones_like(windows, bool)),
    ('next_token', np.roll(windows, -1, axis=1), has_next),
  ):
    counts = np.bincount(ids[valid].ravel())
    top = np.argsort(-counts)[:top_k]
    index = {int(t): k for k, t in enumerate(top)}
    labels = np.vectorize(lambda t, index=index: index.get(int(t), -1))(ids)
    out[name] = (valid & (labels >= 0), labels)
  return out


def pooled_features(cfg, params, batches) -> tuple[np.ndarray, np.ndarray]:
  """Mean over non-pad tokens of every layer's hidden states: ([layers + 1, N, D], labels [N])."""
  feats, labels = [], []
  for batch in batches:
    real = batch['weights'] > 0  # the last batch is padded with empty rows
    tokens = batch['inputs']
    hidden = analysis.capture(cfg, params, tokens).hidden  # [layers+1, B, L, D]
    valid = (tokens != 0)[None, :, :, None]
    feats.append(((hidden * valid).sum(2) / np.maximum(valid.sum(2), 1))[:, real])
    labels.append(batch['targets'][real])
  return np.concatenate(feats, 1), np.concatenate(labels)


def probe_layers(hidden, labels: dict, split: int, genre, steps: int) -> dict:
  """{property: [layers + 1] balanced test accuracy} for hidden [layers+1, N, L, D]."""
  out = {}
  for name, (mask, y) in labels.items():
    train, test = mask.copy(), mask.copy()
    train[split:], test[:split] = False, False
    out[name] = [
      analysis.train_probe(h[train], y[train], h[test], y[test], steps=steps)['balanced_accuracy']
      for h in hidden
    ]
  (xtr, ytr), (xte, yte) = genre
  out['genre'] = [
    analysis.train_probe(a, ytr, b, yte, steps=steps)['balanced_accuracy'] for a, b in zip(xtr, xte)
  ]
  return out


# ----------------------------------------------------------------------------- experiment


def run(opts: Options) -> Result:
  from jaxformer.data import build_task_data
  from jaxformer.models import DecoderLM

  s = _settings(opts.quick)
  pre = pretrained_lm(opts)
  cfg = pre.model_config
  data = lm_data(pre, s['batch_size'])
  windows = np.concatenate(
    [
      b['inputs']
      for b in eval_batches(data, 'validation', -(-s['probe_windows'] // s['batch_size']))
    ]
  )
  windows = windows[: s['probe_windows']]
  labels = token_labels(windows, data.tokenizer, s['top_k'])
  split = (2 * len(windows)) // 3

  genre_data = build_task_data(
    {'name': 'jaxformer_genre'},
    task='classify',
    max_len=cfg.max_len,
    batch_size=s['batch_size'],
    seed=0,
    tokenizer=data.tokenizer,
  )
  limit = s['genre_batches'] or 10**9
  random_params = numpy_init(DecoderLM(cfg), windows[:1])
  probes = {}
  for label, params in (('trained', pre.params), ('random_init', random_params)):
    hidden = analysis.hidden_states(cfg, params, windows)
    genre = [
      pooled_features(cfg, params, eval_batches(genre_data, split_name, limit))
      for split_name in ('train', 'test')
    ]
    probes[label] = probe_layers(hidden, labels, split, genre, s['probe_steps'])
  chance = {name: 1.0 / len(np.unique(y[m])) for name, (m, y) in labels.items()} | {
    'genre': 1.0 / 3
  }

  sweep = _depth_sweep(opts, s)
  results = {
    'model': {
      'workdir': opts.lm_workdir(),
      'step': pre.step,
      'val_loss': pre.val_loss,
      'whole_split_bits_per_byte': whole_split(_summary(opts.lm_workdir())),
      'num_layers': cfg.num_layers,
      'd_model': cfg.d_model,
    },
    'probes': probes,
    'chance_balanced': chance,
    'probe_examples': {k: int(m.sum()) for k, (m, _) in labels.items()},
    'depth_sweep': sweep,
  }
  return Result(
    settings=s, results=results, answer=_answer(results), figures={'': _figure(results)}
  )


def _summary(workdir: str) -> dict:
  with open(os.path.join(workdir, 'summary.json')) as f:
    return json.load(f)


def _depth_sweep(opts: Options, s: dict) -> list[dict]:
  base = small_lm_config(opts.quick)  # the budget: its layers x d_model, mlp_ratio 4
  heads, ratio = base.model.num_heads, base.model.mlp_ratio
  budget = 12 * base.model.num_layers * base.model.d_model**2
  return [
    small_lm_over_seeds(opts, s['seeds'], layers, ratio, width_for_budget(budget, layers, heads))
    for layers in s['depths']
  ]


def _best(values) -> int:
  return int(np.argmax(values))


def _answer(r) -> str:
  t, c = r['probes']['trained'], r['probes']['random_init']
  n = len(t['token']) - 1
  parts = []
  names = {
    'token': 'current token',
    'line_start': 'line start',
    'line_pos': 'position in line',
    'next_token': 'next token (the task)',
    'genre': 'genre',
  }
  for key in PROPERTIES:
    vals = t[key]
    parts.append(
      f'- {names[key]}: embeddings {vals[0]:.2f}, best at layer {_best(vals)} ({max(vals):.2f}), '
      f'top layer {vals[-1]:.2f}; random-weights control best {max(c[key]):.2f}; '
      f'chance {r["chance_balanced"][key]:.2f}.'
    )
  sweep = r['depth_sweep']
  best = min(sweep, key=lambda row: row['bits_per_byte']['mean'])
  shape = lambda row: (  # noqa: E731
    f'{row["num_layers"]} layer{"s" * (row["num_layers"] > 1)} x d={row["d_model"]}'
  )
  sweep_text = '; '.join(
    f'{shape(row)} ({row["non_embedding_params"] / 1e3:,.0f}k): '
    f'{seeds.mean_std(row["bits_per_byte"])}'
    for row in sweep
  )
  gaps = '; '.join(
    f'{shape(row)} {seeds.difference(row["bits_per_byte"], best["bits_per_byte"])}'
    for row in sweep
    if row is not best
  )
  lm_bpb = r['model'].get('whole_split_bits_per_byte')
  reached = f'; it reached {lm_bpb:.3f} bits per byte on the validation split' if lm_bpb else ''
  text = (
    f'Balanced test accuracy of linear probes on the {n}-layer LM (layer 0 = embeddings{reached}):'
    '\n\n'
    + '\n'.join(parts)
    + f'\n\nAt a fixed non-embedding budget (~{sweep[0]["non_embedding_params"] / 1e6:.2f}M '
    f'parameters, {sweep[0]["steps"]} steps each), best validation bits per byte, mean ± std over '
    f'seeds {", ".join(str(x["seed"]) for x in sweep[0]["seed_runs"])}: {sweep_text}. Best: '
    f'{shape(best)}; against it: {gaps}.'
  )
  if all(row.get('whole_split') for row in sweep):  # each run's last evaluation, all held-out text
    text += (
      "\n\nOn the whole validation split (each run's last step, mean ± std): "
      + '; '.join(f'{shape(row)} {seeds.mean_std(row["whole_split"])}' for row in sweep)
      + '.'
    )
  return text


def _figure(r):
  fig = plotting.figure(figsize=(13, 4.5))
  axes = fig.subplots(1, 2)
  colors = plotting.default_colors()
  for i, key in enumerate(PROPERTIES):
    vals = r['probes']['trained'][key]
    axes[0].plot(range(len(vals)), vals, marker='o', color=colors[i], label=key)
    axes[0].plot(range(len(vals)), r['probes']['random_init'][key], ls=':', color=colors[i])
  axes[0].set_xticks(range(len(vals)), ['emb'] + [str(k) for k in range(1, len(vals))])
  axes[0].set_xlabel('layer (solid: trained LM, dotted: random weights)')
  axes[0].set_ylabel('probe balanced accuracy (test)')
  axes[0].set_ylim(0, 1.02)
  axes[0].legend(fontsize=8)
  axes[0].set_title('what a linear probe can read from each layer', fontsize=10)
  sweep = r['depth_sweep']
  axes[1].errorbar(
    [row['num_layers'] for row in sweep],
    [row['bits_per_byte']['mean'] for row in sweep],
    yerr=[row['bits_per_byte']['std'] for row in sweep],
    marker='o',
    capsize=3,
  )
  for row in sweep:
    axes[1].annotate(
      f'd={row["d_model"]}',
      (row['num_layers'], row['bits_per_byte']['mean']),
      fontsize=8,
      textcoords='offset points',
      xytext=(4, 4),
    )
  axes[1].set_xscale('log', base=2)
  axes[1].set_xticks(
    [row['num_layers'] for row in sweep], [str(row['num_layers']) for row in sweep]
  )
  axes[1].set_xlabel('layers (d_model shrinks to keep the parameter count)')
  axes[1].set_ylabel(
    f'validation bits per byte (best; mean ± std, {len(sweep[0]["seed_runs"])} seeds)'
  )
  axes[1].set_title(
    f'fixed budget: ~{sweep[0]["non_embedding_params"] / 1e6:.2f}M non-embedding parameters',
    fontsize=10,
  )
  for ax in axes:
    ax.grid(alpha=0.3)
  return fig
