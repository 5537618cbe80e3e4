"""Changes tried on the default Shakespeare LM, each against the unchanged config.

The target (issue 21): at most 1.95 bits/byte on the whole held-out split, in no more time than the
default run on the same machine. Every lever is `configs/shakespeare_lm.py` plus overrides, trained
once through train.py (reused while the config file and overrides are unchanged), so any row can
be reproduced with the command it prints. A lever's wall time is comparable only with rows that
ran beside it, each pinned to one core of the same machine: the `ran beside` field says which.
"""

from __future__ import annotations

import os

from bench.quality_runs import train

BASE = 'configs/shakespeare_lm.py'
TARGET_BITS_PER_BYTE = 1.95

# slug: (what changes, train.py overrides). 'shipped' is the config as it is.
LEVERS = {
  'shipped': ('the shipped config', ()),
  'nodrop_cos0': (
    'no dropout, cosine decay to zero',
    ('--config.model.dropout_rate=0.0', '--config.min_lr_ratio=0.0'),
  ),
  'nodrop_cos0_b8': (
    'no dropout, cosine decay to zero, batch 8 x 1,700 steps (same tokens, twice the updates), '
    'warmup 200',
    (
      '--config.model.dropout_rate=0.0',
      '--config.min_lr_ratio=0.0',
      '--config.batch_size=8',
      '--config.num_train_steps=1700',
      '--config.warmup_steps=200',
      '--config.eval_every_steps=200',
      '--config.checkpoint_every_steps=200',
    ),
  ),
  'nodrop_cos0_b8_d192_32min': (
    'the same at width 192 (1.8M non-embedding parameters, not 3.2M), trained for 32 minutes '
    '(train_minutes fixes the steps from the measured throughput)',
    (
      '--config.model.dropout_rate=0.0',
      '--config.min_lr_ratio=0.0',
      '--config.batch_size=8',
      '--config.warmup_steps=200',
      '--config.eval_every_steps=200',
      '--config.checkpoint_every_steps=200',
      '--config.model.d_model=192',
      '--config.train_minutes=32',
    ),
  ),
}


def measure(runs: str, slugs=tuple(LEVERS), out: dict | None = None) -> dict:
  """Trains (or reuses) each lever's run under `runs`/levers; returns {slug: row}."""
  rows = dict(out or {})
  for slug in slugs:
    label, overrides = LEVERS[slug]
    summary = train(os.path.join(runs, 'levers', slug), BASE, *overrides, fresh=False)
    rows[slug] = {
      'label': label,
      'overrides': list(overrides),
      'bits_per_byte': summary['final']['bits_per_byte'],  # the whole validation split
      'steps': summary['last_step'],
      'wall_s': summary['wall_s'],
      'tokens_per_s': summary['tokens_per_s'],
      'load': summary['load'],
      'ran_beside': rows.get(slug, {}).get('ran_beside'),
    }
  return rows


def section(levers: dict, provenance: list[str]) -> list[str]:
  """docs/results.md's table of levers: bits/byte, steps, wall time, and the target's verdict."""
  lines = [
    '## Levers tried on the default LM',
    '',
    *provenance,
    f'Target: at most {TARGET_BITS_PER_BYTE} bits/byte on the whole validation split in no more '
    'time than the shipped config. Each row is `python train.py '
    '--config=configs/shakespeare_lm.py` with the overrides named, one seed (0), each run pinned '
    'to one core; wall times compare only between runs that ran beside each other (last column).',
    '',
    '| change | overrides | bits/byte | steps | wall time | tokens/s | ran beside |',
    '|---|---|---|---|---|---|---|',
  ]
  for row in levers.values():
    overrides = ' '.join(f'`{o}`' for o in row['overrides']) or '—'
    lines.append(
      f'| {row["label"]} | {overrides} | {row["bits_per_byte"]:.3f} | {row["steps"]} '
      f'| {row["wall_s"]:.0f} s | {row["tokens_per_s"]:.0f} | {row.get("ran_beside") or "—"} |'
    )
  met = [s for s, row in levers.items() if row['bits_per_byte'] <= TARGET_BITS_PER_BYTE]
  lines += [
    '',
    'Target met by: '
    + (', '.join(levers[s]['label'] for s in met) if met else 'none of these')
    + '.',
    '',
  ]
  return lines
