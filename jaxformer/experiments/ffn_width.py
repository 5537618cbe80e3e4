"""ffn_width: why expand the FFN to mlp_ratio * d_model and project back?

A layer's parameters: attention 4 d^2, feed-forward 2 * mlp_ratio * d^2. Two sweeps of the small
from-scratch LM (common.small_lm_config), each run the same number of steps on the same data:
  fixed depth    4 layers, mlp_ratio in RATIOS: more ratio = more parameters and FLOPs;
  fixed params   num_layers chosen so layers * (4 + 2 * mlp_ratio) d^2 matches the 4-layer,
                 mlp_ratio 4 model: mlp_ratio 0 gets 12 attention-only layers, 1 gets 8, 2 gets 6
                 (mlp_ratio 8 would need 2.4 layers: 2 is the nearest, about 17% fewer parameters).
Validation bits per byte is compared against non-embedding parameters and against training time.
"""

from __future__ import annotations

from jaxformer.experiments.common import (
  Options,
  Result,
  describe_lm_run,
  pct,
  small_lm_config,
  train_cached,
)

QUESTION = 'Why expand the FFN and project back?'


def _settings(quick: bool) -> dict:
  if quick:
    return {'ratios': [0, 4], 'base_layers': 2, 'base_ratio': 4, 'param_matched': True}
  return {'ratios': [0, 1, 2, 4, 8], 'base_layers': 4, 'base_ratio': 4, 'param_matched': True}


def layers_for_budget(base_layers: int, base_ratio: float, ratio: float) -> int:
  """Depth whose layers * (4 + 2 * ratio) is nearest to base_layers * (4 + 2 * base_ratio),
  at least 1."""
  return max(1, round(base_layers * (4 + 2 * base_ratio) / (4 + 2 * ratio)))


def _describe(run, ratio: float, series: str) -> dict:
  return {'series': series, 'mlp_ratio': ratio, **describe_lm_run(run)}


def run(opts: Options) -> Result:
  s = _settings(opts.quick)
  root = opts.runs_dir('small_lm')  # shared with depth: an identical config is trained once
  rows = []
  for ratio in s['ratios']:
    config = small_lm_config(opts.quick)
    config.model.num_layers = s['base_layers']
    config.model.mlp_ratio = float(ratio)
    rows.append(
      _describe(
        train_cached(
          config, root, f'layers{s["base_layers"]}-ratio{ratio:g}-d{config.model.d_model}'
        ),
        ratio,
        'fixed depth',
      )
    )
  if s['param_matched']:
    for ratio in s['ratios']:
      layers = layers_for_budget(s['base_layers'], s['base_ratio'], ratio)
      if ratio == s['base_ratio']:
        continue  # the fixed-depth run already is this model
      config = small_lm_config(opts.quick)
      config.model.num_layers = layers
      config.model.mlp_ratio = float(ratio)
      rows.append(
        _describe(
          train_cached(config, root, f'layers{layers}-ratio{ratio:g}-d{config.model.d_model}'),
          ratio,
          'fixed params',
        )
      )
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
    f'{r["train_seconds"]:.0f} s): {r["best_val_bits_per_byte"]:.3f}'
  )
  text = (
    f'Validation bits per byte after the same number of steps (lower is better).\n\n'
    f'Fixed depth ({s["base_layers"]} layers): ' + '; '.join(fmt(r) for r in depth) + '.\n'
    'Removing the FFN entirely costs '
    f'{none["best_val_bits_per_byte"] - base["best_val_bits_per_byte"]:+.3f} bits/byte against '
    f'mlp_ratio {s["base_ratio"]}, with '
    f'{pct(none["non_embedding_params"], base["non_embedding_params"])} parameters and '
    f'{pct(none["train_seconds"], base["train_seconds"])} training time.'
  )
  matched = [r for r in rows if r['series'] == 'fixed params'] + [base]
  if len(matched) > 1:
    matched.sort(key=lambda r: r['mlp_ratio'])
    best = min(matched, key=lambda r: r['best_val_bits_per_byte'])
    text += (
      '\n\nFixed parameters (depth traded for width): '
      + '; '.join(fmt(r) for r in matched)
      + f'. Best at this budget: mlp_ratio {best["mlp_ratio"]:g} with {best["num_layers"]} layers.'
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
      ax.plot(
        [r[key] for r in rs], [r['best_val_bits_per_byte'] for r in rs], marker=marker, label=series
      )
      for r in rs:
        ax.annotate(
          f'r={r["mlp_ratio"]:g},L={r["num_layers"]}',
          (r[key], r['best_val_bits_per_byte']),
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
  axes[2].set_title(f'validation curves, {s["base_layers"]} layers', fontsize=10)
  for ax in axes:
    ax.set_ylabel('validation bits per byte')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return fig
