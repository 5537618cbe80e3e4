"""python -m jaxformer.experiments NAME|all [--quick] [--workdir DIR] [--runs DIR] [--out DIR]"""
from __future__ import annotations

import argparse
import os
import sys

from jaxformer.experiments import NAMES, Options, run


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m jaxformer.experiments", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="experiments: " + ", ".join(NAMES))
    p.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of {', '.join(NAMES)}, or 'all'")
    p.add_argument("--quick", action="store_true", help="tiny sizes, well under a minute each (used by the tests)")
    p.add_argument("--workdir", default=None,
                   help="language-model run to analyse (heads, depth, pretraining); trained there if it holds "
                        "no finished run. Default: runs/shakespeare_lm (--quick: runs/experiments-quick/lm)")
    p.add_argument("--runs", default=None,
                   help="where the models an experiment trains are cached. Default: runs/experiments "
                        "(--quick: runs/experiments-quick)")
    p.add_argument("--out", default=os.path.join("docs", "experiments"), help="where PNG/JSON/markdown go")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not keep compiled XLA programs on disk between runs")
    args = p.parse_args(argv)
    names = list(NAMES) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        p.error(f"unknown experiment {unknown[0]!r}; choose from {', '.join(NAMES)} or 'all'")
    return args, names


def main(argv=None) -> int:
    args, names = parse(sys.argv[1:] if argv is None else argv)
    opts = Options(quick=args.quick, workdir=args.workdir, runs=args.runs, out=args.out)
    if not args.no_compile_cache:
        # Sweeps train many models with the same shapes: XLA's persistent cache turns their
        # 10-20 s compilations into a file read after the first one.
        import jax
        cache = os.path.join(os.path.dirname(opts.runs_dir("x")), ".jax_cache")
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    for name in names:
        run(name, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
