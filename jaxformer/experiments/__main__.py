"""python -m jaxformer.experiments NAME|all [--quick] [--workdir DIR] [--runs DIR] [--out DIR]"""

from __future__ import annotations

import argparse
import os
import sys

from jaxformer.experiments import NAMES, Options, run
from jaxformer.training import compile_cache


def parse(argv):
  p = argparse.ArgumentParser(
    prog='python -m jaxformer.experiments',
    description=__doc__.split('\n')[0],
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog='experiments: ' + ', '.join(NAMES),
  )
  p.add_argument(
    'names', nargs='+', metavar='NAME', help=f"one or more of {', '.join(NAMES)}, or 'all'"
  )
  p.add_argument(
    '--quick', action='store_true', help='tiny sizes, well under a minute each (used by the tests)'
  )
  p.add_argument(
    '--workdir',
    default=None,
    help='run to analyse: a language model for heads, heads_dynamics, depth, pretraining (e.g. '
    'runs/shakespeare_lm; default: RUNS/shakespeare_lm, configs/shakespeare_lm.py trained there '
    'first if it holds no finished run; --quick: a tiny LM in RUNS/lm); a jaxformer_numbers '
    'translate run for depth_translation (default: '
    'configs/numbers_translate.py trained once under RUNS/translate)',
  )
  p.add_argument(
    '--runs',
    default=None,
    help='where the models an experiment trains are cached. Default: runs/experiments '
    '(--quick: runs/experiments-quick)',
  )
  p.add_argument(
    '--out', default=os.path.join('docs', 'experiments'), help='where PNG/JSON/markdown go'
  )
  args = p.parse_args(argv)
  names = list(NAMES) if args.names == ['all'] else args.names
  unknown = [n for n in names if n not in NAMES]
  if unknown:
    p.error(f"unknown experiment {unknown[0]!r}; choose from {', '.join(NAMES)} or 'all'")
  return args, names


def main(argv=None) -> int:
  args, names = parse(sys.argv[1:] if argv is None else argv)
  opts = Options(quick=args.quick, workdir=args.workdir, runs=args.runs, out=args.out)
  # Sweeps train many models with the same shapes: XLA's persistent cache (the one train.py
  # uses) makes every compilation after the first a file read.
  compile_cache.enable()
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax notes every read-only checkpoint it opens
  for name in names:
    run(name, opts)
  return 0


if __name__ == '__main__':
  sys.exit(main())
