"""The spread over seeds, and when two settings count as different.

An experiment that compares settings runs each with several seeds (a seed changes the
initialization, the data order and the dropout masks, and in few-label runs the labelled subset).
Each setting is reported as mean ± standard deviation over its seeds (the sample deviation,
ddof=1, as docs/results.md's seed tables use). Two settings are called distinguishable only when
those ranges do not overlap. With three seeds this is a coarse rule, not a significance test: it
marks the gaps that seed noise alone could explain, which an answer must not present as findings.
"""

from __future__ import annotations

import numpy as np


def spread(values) -> dict:
  """{'mean', 'std', 'seeds', 'values'} of one setting's per-seed numbers (std 0 for one seed)."""
  values = [float(v) for v in values]
  if not values:
    raise ValueError('spread of no values: a setting needs at least one seed')
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return {'mean': float(np.mean(values)), 'std': std, 'seeds': len(values), 'values': values}


def spread_if_complete(values) -> dict | None:
  """spread(values), or None when some run lacks the number (a run whose summary predates it)."""
  values = list(values)
  return None if any(v is None for v in values) else spread(values)


def mean_std(s: dict, digits: int = 3) -> str:
  """'2.345 ± 0.012', or '2.345 (1 seed)' when there is no spread to show."""
  if s['seeds'] < 2:
    return f'{s["mean"]:.{digits}f} (1 seed)'
  return f'{s["mean"]:.{digits}f} ± {s["std"]:.{digits}f}'


def distinguishable(a: dict, b: dict) -> bool | None:
  """True when the mean ± std ranges of a and b do not overlap; None with fewer than 2 seeds."""
  if min(a['seeds'], b['seeds']) < 2:
    return None
  return a['mean'] + a['std'] < b['mean'] - b['std'] or b['mean'] + b['std'] < a['mean'] - a['std']


def difference(a: dict, b: dict, digits: int = 3) -> str:
  """'+0.123' (a's mean minus b's), followed by whether the seeds can tell them apart."""
  gap = f'{a["mean"] - b["mean"]:+.{digits}f}'
  verdict = distinguishable(a, b)
  if verdict is None:
    return f'{gap} (one seed: not established)'
  return gap if verdict else f'{gap}, not distinguishable (the mean ± std ranges overlap)'
