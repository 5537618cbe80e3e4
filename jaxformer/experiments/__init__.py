"""Experiments that measure why transformers are built the way they are.

    python -m jaxformer.experiments NAME [--quick] [--workdir DIR] [--runs DIR] \\
        [--out docs/experiments]

Each NAME is a module here with QUESTION and run(opts); see docs/experiments.md for the answers.
"""

from __future__ import annotations

import importlib

from jaxformer.experiments.common import Options, run_experiment

NAMES = (
  'heads_cost',
  'heads',
  'heads_dynamics',
  'depth',
  'depth_translation',
  'ffn_width',
  'overfitting',
  'pretraining',
)


def run(name: str, opts: Options | None = None) -> dict:
  """Runs experiment NAME, writes its PNG, JSON and markdown answer to opts.out; returns JSON."""
  if name not in NAMES:
    raise ValueError(f'unknown experiment {name!r}; choose one of {", ".join(NAMES)}')
  module = importlib.import_module(f'jaxformer.experiments.{name}')
  return run_experiment(name, module, opts or Options())


__all__ = ['NAMES', 'Options', 'run']
