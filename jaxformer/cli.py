"""What the command lines share: argument parsing and one-line errors with exit code 2.

    def main(argv=None) -> int:
      return run_cli(_main, build_parser(), argv)   # _main(args) -> exit code

A bad flag, a missing run, an unknown split or text too long prints one line, `error: ...`, on
stderr and exits with code 2, like train.py. Used by generate, translate, evaluate, predict and
hf; nothing below the command lines imports this module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class UsageError(ValueError):
  """A bad command line (argparse's message, kept to one line)."""


class Parser(argparse.ArgumentParser):
  """argparse that raises instead of printing usage and exiting, so errors stay one line."""

  def error(self, message):
    raise UsageError(f'{message} (see {self.prog} --help)')


def run_cli(
  main: Callable[[argparse.Namespace], int], parser: Parser, argv: Sequence[str] | None
) -> int:
  """Parses argv, runs main(args); expected failures -> `error: <one line>` on stderr, code 2."""
  from absl import logging as absl_logging

  from jaxformer.checkpoint import CheckpointError
  from jaxformer.data import DataError

  absl_logging.set_verbosity(absl_logging.ERROR)  # orbax logs warnings meant for training runs

  try:
    args = parser.parse_args(argv)
    return main(args)
  except (UsageError, ValueError, CheckpointError, DataError, OSError) as e:
    message = ' '.join(str(e).split()) or type(e).__name__
    print(f'error: {message}', file=sys.stderr, flush=True)
    return 2
