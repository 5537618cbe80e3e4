"""Changes tried on the default Shakespeare LM, and the previous default they replaced.

The target (issue 21): at most 1.95 bits/byte on the whole held-out split, in no more time than the
default run on the same machine. Every lever is `configs/shakespeare_lm.py` plus overrides, trained
once through train.py (reused while the config file and overrides are unchanged), so any row can
be reproduced with the command it prints. A lever's wall time is comparable only with rows that
ran beside it, each pinned to one core of the same machine: the `ran beside` field says which.
"""

from __future__ import annotations

import os

from bench.quality_runs import train
from jaxformer.experiments.seeds import spread

BASE = 'configs/shakespeare_lm.py'
TARGET_BITS_PER_BYTE = 1.95

# slug: (what changes, train.py overrides of configs/shakespeare_lm.py as it is now). The reuse
# signature covers the config file, so changing the file retrains every row.
GELU = ('--config.model.activation=gelu', '--config.model.d_ff=0')  # the default until SwiGLU
PREVIOUS = (  # the default before these levers: 256 wide, batch 16, dropout 0.1, cosine to 0.1
  *GELU,
  '--config.model.d_model=256',
  '--config.batch_size=16',
  '--config.num_train_steps=850',
  '--config.warmup_steps=100',
  '--config.eval_every_steps=100',
  '--config.checkpoint_every_steps=100',
)
LEVERS = {
  'previous_default': (
    'previous default: 256 wide, batch 16 x 850 steps, dropout 0.1, cosine to 0.1 of the peak',
    (*PREVIOUS, '--config.model.dropout_rate=0.1', '--config.min_lr_ratio=0.1'),
  ),
  'nodrop_cos0': ('previous default without dropout, cosine decay to zero', PREVIOUS),
  'nodrop_cos0_b8': (
    'the same at batch 8 x 1,700 steps (same tokens, twice the updates), warmup 200',
    (*GELU, '--config.model.d_model=256', '--config.num_train_steps=1700'),
  ),
  'gelu_default': (
    'the same at width 192 (1.8M non-embedding parameters, not 3.2M) for the 2,535 steps a '
    '32-minute budget fixed: the GELU default',
    GELU,
  ),
  # SwiGLU with d_ff 512 keeps the feed-forward block's 295k parameters a layer (3 x 192 x 512 =
  # 2 x 192 x 768), and a step costs what GELU's does here (0.577 s against 0.579 s, side by side).
  'default': (
    'the same with a SwiGLU feed-forward block (d_ff 512: the same parameters): the default now',
    (),
  ),
  'swiglu_seed1': ('the default, seed 1 (not 0)', ('--config.seed=1',)),
  'swiglu_seed2': ('the default, seed 2 (not 0)', ('--config.seed=2',)),
  # The rows below change the GELU default, through shift_windows.
  'nodrop_cos0_b8_d128_32min': (
    'the GELU default at width 128 (0.8M non-embedding parameters) for a 32-minute budget',
    (*GELU, '--config.model.d_model=128', '--config.train_minutes=32'),
  ),
  'lr3e-3': (
    'the GELU default at peak learning rate 3e-3 (not 2e-3)',
    (*GELU, '--config.learning_rate=3e-3'),
  ),
  'untied': (
    'the GELU default with its own output projection (untied from the token embedding)',
    (*GELU, '--config.model.tie_embeddings=false'),
  ),
  # The default's validation loss flattens over its last 500 steps while its training loss keeps
  # falling (the gap grows from 0.42 to 0.58 nats at ~4.5 passes): regularization, measured.
  'dropout0.1': ('the GELU default with dropout 0.1', (*GELU, '--config.model.dropout_rate=0.1')),
  'wd0.5': (
    'the GELU default with weight decay 0.5 (not 0.1)',
    (*GELU, '--config.weight_decay=0.5'),
  ),
  # Both change the cost of a step, so they get the default's time, not its steps: 22 minutes is
  # about what the default's 2,535 steps took beside them on the machine they ran on (1,347 s).
  'ctx512_22min': (
    'the GELU default at context 512 (batch 4: the same 2,048 tokens a step) for its time, '
    '22 minutes',
    (*GELU, '--config.model.max_len=512', '--config.batch_size=4', '--config.train_minutes=22'),
  ),
  'vocab2048_22min': (
    'the GELU default with a 2,048-piece vocabulary (not 4,096) for its time, 22 minutes',
    (*GELU, '--config.dataset.vocab_size=2048', '--config.train_minutes=22'),
  ),
  # Width against depth at about the default's 1.8M non-embedding parameters and its time (the
  # depth experiment's fixed-budget sweep favoured 2 wide layers, but over 250 steps, not 2,535).
  'layers3_d224_22min': (
    'the GELU default as 3 layers of width 224 (1.8M non-embedding parameters) for its time, '
    '22 minutes',
    (
      *GELU,
      '--config.model.num_layers=3',
      '--config.model.d_model=224',
      '--config.train_minutes=22',
    ),
  ),
  'layers6_d160_22min': (
    'the GELU default as 6 layers of width 160 (1.8M non-embedding parameters) for its time, '
    '22 minutes',
    (
      *GELU,
      '--config.model.num_layers=6',
      '--config.model.d_model=160',
      '--config.train_minutes=22',
    ),
  ),
  # The default sees each 256-token window ~4.5 times, cut at the same places every pass, and its
  # validation loss flattens while the training loss falls: new cuts each epoch vary the contexts.
  'shift_windows': (
    'the GELU default with its train windows cut at a new seeded offset every epoch',
    (*GELU, '--config.dataset.shift_windows=true'),
  ),
  'swiglu_22min': (
    'the default given 22 minutes instead of 2,535 steps',
    ('--config.train_minutes=22',),
  ),
  'swiglu_shift': (
    'the default with its train windows cut at a new seeded offset every epoch',
    ('--config.dataset.shift_windows=true',),
  ),
  'swiglu_b4_22min': (
    'the default at batch 4 (1,024 tokens a step: twice the updates for the tokens) for its '
    'time, 22 minutes',
    ('--config.batch_size=4', '--config.train_minutes=22'),
  ),
  # The optimizer's settings were chosen on the GELU model; these cost nothing per step.
  'swiglu_b2_0.95': ('the default with Adam beta2 0.95 (not 0.98)', ('--config.adam_b2=0.95',)),
  'swiglu_b2_0.99': ('the default with Adam beta2 0.99 (not 0.98)', ('--config.adam_b2=0.99',)),
  'swiglu_lr1.5e-3': (
    'the default at peak learning rate 1.5e-3 (not 2e-3)',
    ('--config.learning_rate=1.5e-3',),
  ),
  'swiglu_lr2.5e-3': (
    'the default at peak learning rate 2.5e-3 (not 2e-3)',
    ('--config.learning_rate=2.5e-3',),
  ),
  'swiglu_warmup100': (
    'the default with 100 warmup steps (not 200)',
    ('--config.warmup_steps=100',),
  ),
  # Weight decay on the matrices either side of 0.1 (0.5 did worse on the GELU model).
  'swiglu_wd0.05': (
    'the default with weight decay 0.05 (not 0.1)',
    ('--config.weight_decay=0.05',),
  ),
  'swiglu_wd0.2': (
    'the default with weight decay 0.2 (not 0.1)',
    ('--config.weight_decay=0.2',),
  ),
  # The validation loss flattens while the training loss still falls, yet dropout 0.1 and decay
  # 0.5 on the matrices did worse on the GELU model; the tied token embedding (also the output
  # layer) had no decay. It lowered each seed, within seed noise, and genre fine-tuned from it
  # scored within the spread of the default's own LM runs (docs/results.md): not shipped.
  'decay_embeddings': (
    'the default with weight decay on the token embedding too (tied: also the output layer)',
    ('--config.decay_embeddings=true',),
  ),
  'decay_embeddings_seed1': (
    'the default with the embedding decayed too, seed 1 (not 0)',
    ('--config.decay_embeddings=true', '--config.seed=1'),
  ),
  'decay_embeddings_seed2': (
    'the default with the embedding decayed too, seed 2 (not 0)',
    ('--config.decay_embeddings=true', '--config.seed=2'),
  ),
}


def measure(runs: str, slugs=tuple(LEVERS), out: dict | None = None) -> dict:
  """Trains (or reuses) each lever's run under `runs`/levers; returns {slug: row}."""
  rows = dict(out or {})
  for slug in slugs:
    label, overrides = LEVERS[slug]
    summary = train(os.path.join(runs, 'levers', slug), BASE, *overrides, fresh=False)
    old = rows.get(slug, {})
    reused = old.get('wall_s') == summary['wall_s'] and old.get('steps') == summary['last_step']
    rows[slug] = {
      'label': label,
      'overrides': list(overrides),
      'bits_per_byte': summary['final']['bits_per_byte'],  # the whole validation split
      'steps': summary['last_step'],
      'wall_s': summary['wall_s'],
      'tokens_per_s': summary['tokens_per_s'],
      'load': summary['load'],
      # Who shared the machine is recorded by hand; a retrained run has not been paired yet.
      'ran_beside': old.get('ran_beside') if reused else None,
    }
  return rows


def section(levers: dict, provenance: list[str], lm: dict | None = None) -> list[str]:
  """docs/results.md's table of levers: bits/byte, steps, wall time, and the target's verdict.

  lm: results.json's 'lm' part, to say when it measured another default than the one here.
  """
  base = levers.get('previous_default', {}).get('bits_per_byte')
  lines = [
    '## Levers tried on the default LM',
    '',
    *provenance,
    f'Target: at most {TARGET_BITS_PER_BYTE} bits/byte on the whole validation split in no more '
    'time than the previous default. Each row is `python train.py '
    '--config=configs/shakespeare_lm.py` with the overrides named (relative to the config as it '
    'is now), seed 0 unless the row names another, each run pinned to one core; wall times '
    'compare only between runs that ran beside each other (last column). The rows up to the '
    'default are cumulative: each keeps the changes above it. The rows after it change the '
    'default, or the GELU default where they say so, by their overrides alone.',
    '',
    '| change | overrides | bits/byte | vs previous default | vs default | steps | wall time '
    '| tokens/s | ran beside |',
    '|---|---|---|---|---|---|---|---|---|',
  ]

  def change(row, reference):
    return '—' if reference is None else f'{row["bits_per_byte"] - reference:+.3f}'

  default = levers.get('default', {}).get('bits_per_byte')
  for row in levers.values():
    overrides = ' '.join(f'`{o}`' for o in row['overrides']) or 'none'
    lines.append(
      f'| {row["label"]} | {overrides} | {row["bits_per_byte"]:.3f} | {change(row, base)} '
      f'| {change(row, default)} | {row["steps"]} '
      f'| {row["wall_s"]:.0f} s | {row["tokens_per_s"]:.0f} | {row.get("ran_beside") or "—"} |'
    )
  best = min(levers.values(), key=lambda row: row['bits_per_byte'])
  # The lowest row may be a lever that is not shipped, from one seed: not the target's verdict.
  place = 'at or under' if best['bits_per_byte'] <= TARGET_BITS_PER_BYTE else 'above'
  lines += ['', f'Lowest row: {best["label"]}, {best["bits_per_byte"]:.3f} ({place} the target).']
  # A row and its reruns with another seed and nothing else: one seed may sit on the line, so
  # the target is judged on the default's mean, given to four decimals lest 1.9501 print as 1.950.
  groups: dict[tuple, dict[int, tuple[str, dict]]] = {}
  for slug in sorted(levers, key=lambda s: s != 'default'):  # the default is its group's base
    row = levers[slug]
    rest = tuple(sorted(o for o in row['overrides'] if not o.startswith('--config.seed=')))
    seeds = [o for o in row['overrides'] if o.startswith('--config.seed=')]
    seed = int(seeds[-1].split('=', 1)[1]) if seeds else 0
    groups.setdefault(rest, {}).setdefault(seed, (slug, row))
  for runs in groups.values():
    if len(runs) < 2 or 0 not in runs:  # no reruns, or no seed-0 row to name them by
      continue
    slug = runs[0][0]
    values = [runs[seed][1]['bits_per_byte'] for seed in sorted(runs)]
    mean = spread(values)['mean']
    verdict = 'met' if mean <= TARGET_BITS_PER_BYTE else 'missed'
    name = 'The default' if slug == 'default' else f'The {slug} row'
    lines.append(
      f'{name} over seeds {", ".join(map(str, sorted(runs)))}: '
      f'{", ".join(f"{v:.4f}" for v in values)}, mean {mean:.4f}'
      + (f': target {verdict} on the mean.' if slug == 'default' else '.')
    )
  shipped = levers.get('default', {}).get('steps')
  if lm and shipped and lm['default_run']['steps'] != shipped:
    lines.append(
      'The language-model section above measured the previous default '
      f'({lm["default_run"]["steps"]} steps); each genre section below names the LM it '
      'fine-tunes from.'
    )
  return lines + ['']
