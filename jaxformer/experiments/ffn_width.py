"""ffn_width: why expand the FFN to mlp_ratio * d_model and project back?

A layer's parameters: attention 4 d^2, feed-forward 2 * mlp_ratio * d^2. Two sweeps of the small
from-scratch LM (common.small_lm_config), each run the same number of steps on the same data:
  fixed depth    4 layers, mlp_ratio in RATIOS: more ratio = more parameters and FLOPs;
  fixed params   num_layers chosen so layers * (4 + 2 * mlp_ratio) d^2 matches the 4-layer,
                 mlp_ratio 4 model: mlp_ratio 0 gets 12 attention-only layers, 1 gets 8, 2 gets 6
                 (mlp_ratio 8 would need 2.4 layers: 2 is the nearest, about 17% fewer parameters).
Validation bits per byte is compared against non-embedding parameters and against training time.
Every setting runs with seeds 0, 1, 2 (initialization and data order); the answer gives the mean
± std of the best validation bits per byte and says which gaps the seeds cannot tell apart. Those
evaluations score a fixed prefix of the held-out plays (eval_steps batches); the answer also gives
each run's last evaluation, which scores the whole validation split.
"""

from __future__ import annotations

from jaxformer.experiments import seeds
from jaxformer.experiments.common import (
  Options,
  Result,
  pct,
  small_lm_config,
  small_lm_over_seeds,
)

QUESTION = 'Why expand the FFN and project back?'


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'ratios': [0, 4],
      'base_layers': 2,
      'base_ratio': 4,
      'param_matched': True,
      'seeds': [0, 1],  # two, so the quick path takes the spread too
    }
  return {
    'ratios': [0, 1, 2, 4, 8],
    'base_layers': 4,
    'base_ratio': 4,
    'param_matched': True,
    'seeds': [0, 1, 2],
  }


def layers_for_budget(base_layers: int, base_ratio: float, ratio: float) -> int:
  """Depth whose layers * (4 + 2 * ratio) is nearest to base_layers * (4 + 2 * base_ratio),
  at least 1."""
  return max(1, round(base_layers * (4 + 2 * base_ratio) / (4 + 2 * ratio)))


def _setting(opts: Options, s: dict, layers: int, ratio: float, series: str) -> dict:
  """One (layers, mlp_ratio) of a series over the seeds (common.small_lm_over_seeds)."""
  d_model = small_lm_config(opts.quick).model.d_model
  return {
    'series': series,
    'mlp_ratio': ratio,
    **small_lm_over_seeds(opts, s['seeds'], layers, ratio, d_model),
  }


def run(opts: Options) -> Result:
  s = _settings(opts.quick)
  rows = [_setting(opts, s, s['base_layers'], ratio, 'fixed depth') for ratio in s['ratios']]
  if s['param_matched']:
    for ratio in s['ratios']:
      if ratio == s['base_ratio']:
        continue  # the fixed-depth run already is this model
      layers = layers_for_budget(s['base_layers'], s['base_ratio'], ratio)
      rows.append(_setting(opts, s, layers, ratio, 'fixed params'))
  base = small_lm_config(opts.quick)
  settings = dict(
    s,
    d_model=base.model.d_model,
    num_heads=base.model.num_heads,
    max_len=base.model.max_len,
    batch_size=base.batch_size,
    num_train_steps=base.num_train_steps,
    learning_rate=base.learning_rate,
    vocab_size=base.dataset.vocab_size,
    tokenizer=base.dataset.tokenizer,
    dropout_rate=base.model.dropout_rate,
  )
  return Result(
    settings=settings,
    results={'runs': rows},
    answer=_answer(s, rows),
    figures={'': _figure(s, rows)},
  )


def _answer(s, rows) -> str:
  depth = [r for r in rows if r['series'] == 'fixed depth']
  base = next(r for r in depth if r['mlp_ratio'] == s['base_ratio'])
  none = next(r for r in depth if r['mlp_ratio'] == 0)
  fmt = lambda r: (
    f'mlp_ratio {r["mlp_ratio"]:g} x {r["num_layers"]} layers '
    f'({r["non_embedding_params"] / 1e3:,.0f}k params, '
    f'{r["train_seconds"]:.0f} s): {seeds.mean_std(r["bits_per_byte"])}'
  )
  text = (
    'Best validation bits per byte after the same number of steps (lower is better), mean ± std '
    f"over seeds {', '.join(map(str, s['seeds']))}; training time is seed 0's.\n\n"
    f'Fixed depth ({s["base_layers"]} layers): ' + '; '.join(fmt(r) for r in depth) + '.\n'
    'Each step up in mlp_ratio: '
    + '; '.join(
      f'{a["mlp_ratio"]:g} -> {b["mlp_ratio"]:g} '
      f'{seeds.difference(b["bits_per_byte"], a["bits_per_byte"])}'
      for a, b in zip(depth, depth[1:])
    )
    + f'.\nRemoving the FFN entirely, against mlp_ratio {s["base_ratio"]}: bits/byte '
    f'{seeds.difference(none["bits_per_byte"], base["bits_per_byte"])}, with '
    f'{pct(none["non_embedding_params"], base["non_embedding_params"])} parameters and '
    f'{pct(none["train_seconds"], base["train_seconds"])} training time.'
  )
  matched = [r for r in rows if r['series'] == 'fixed params'] + [base]
  if len(matched) > 1:
    matched.sort(key=lambda r: r['mlp_ratio'])
    ranked = sorted(matched, key=lambda r: r['bits_per_byte']['mean'])
    best, runner_up = ranked[0], ranked[1]
    text += (
      '\n\nFixed parameters (depth traded for width): '
      + '; '.join(fmt(r) for r in matched)
      + f'. Best at this budget: mlp_ratio {best["mlp_ratio"]:g} with {best["num_layers"]} layers; '
      f'the next, mlp_ratio {runner_up["mlp_ratio"]:g} with {runner_up["num_layers"]} layers, '
      'is behind it by '
      f'{seeds.difference(runner_up["bits_per_byte"], best["bits_per_byte"])}.'
    )
  if all(r.get('whole_split') for r in rows):  # each run's last evaluation, on every held-out token
    text += (
      "\n\nOn the whole validation split (each run's last step, mean ± std): "
      + '; '.join(
        f'mlp_ratio {r["mlp_ratio"]:g} x {r["num_layers"]} layers '
        f'{seeds.mean_std(r["whole_split"])}'
        for r in sorted(rows, key=lambda r: (r['series'] != 'fixed depth', r['mlp_ratio']))
      )
      + '.'
    )
  return text


def _figure(s, rows):
  from jaxformer import plotting

  fig = plotting.figure(figsize=(16, 4.5))
  axes = fig.subplots(1, 3)
  for series, marker in (('fixed depth', 'o'), ('fixed params', 's')):
    rs = sorted(
      [
        r
        for r in rows
        if r['series'] == series
        or (
          series == 'fixed params'
          and r['series'] == 'fixed depth'
          and r['mlp_ratio'] == s['base_ratio']
        )
      ],
      key=lambda r: r['mlp_ratio'],
    )
    if len(rs) < 2:
      continue
    for ax, key in ((axes[0], 'non_embedding_params'), (axes[1], 'train_seconds')):
      ax.errorbar(
        [r[key] for r in rs],
        [r['bits_per_byte']['mean'] for r in rs],
        yerr=[r['bits_per_byte']['std'] for r in rs],
        marker=marker,
        capsize=3,
        label=series,
      )
      for r in rs:
        ax.annotate(
          f'r={r["mlp_ratio"]:g},L={r["num_layers"]}',
          (r[key], r['bits_per_byte']['mean']),
          fontsize=7,
          textcoords='offset points',
          xytext=(3, 3),
        )
  for r in rows:
    if r['series'] == 'fixed depth':
      axes[2].plot(
        r['val_steps'], r['val_bits_per_byte'], marker='.', label=f'mlp_ratio {r["mlp_ratio"]:g}'
      )
  axes[0].set_xlabel('non-embedding parameters')
  axes[1].set_xlabel('training time (s, this machine)')
  axes[2].set_xlabel('step')
  axes[2].set_title(f'validation curves, {s["base_layers"]} layers, seed 0', fontsize=10)
  for ax in axes[:2]:
    ax.set_title(f'best of each run, mean ± std over {len(s["seeds"])} seed(s)', fontsize=10)
  for ax in axes:
    ax.set_ylabel('validation bits per byte')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return fig
