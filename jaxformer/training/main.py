"""The command line: `python train.py --config=configs/NAME.py --workdir=DIR [--config.k=v ...]`.

`--config=NAME` (no .py) names a shipped config (jaxformer/configs/NAME.py, configs/ in the
repository): `jaxformer-train --config=tiny` works from any directory. A config file of your own
imports the base with `from jaxformer.configs import default`.

Exit codes: 0 done (or stopped early, or preempted and saved), 2 bad config or input (one line on
stderr, nothing written), 3 training diverged.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import sys
import traceback
import warnings

import absl
import ml_collections
from absl import flags
from ml_collections import config_flags

FLAGS = flags.FlagValues()
config_flags.DEFINE_config_file(
  'config',
  None,
  'Training config file, or the name of a shipped config.',
  flag_values=FLAGS,
  lock_config=True,
)
flags.DEFINE_string(
  'workdir', None, 'Run directory (default: runs/<config name>).', flag_values=FLAGS
)
flags.DEFINE_bool('verbose', False, 'Show tracebacks for errors.', flag_values=FLAGS)

DEFAULT_CONFIG = 'shakespeare_lm'
# Frames of these files are the config machinery, not the user's config (see _config_error).
_MACHINERY = tuple(
  os.path.dirname(m.__file__) + os.sep for m in (absl, ml_collections, importlib)
) + (os.path.abspath(__file__),)


def _fail(message: str, code: int, verbose: bool = False) -> int:
  if verbose:
    traceback.print_exc()
  print(f'error: {message}', file=sys.stderr, flush=True)
  return code


def shipped_config(name: str) -> str:
  """The file of a config shipped in the jaxformer.configs package (configs/ in the repository)."""
  return str(importlib.resources.files('jaxformer.configs') / f'{name}.py')


def resolve_config_arg(value: str) -> str:
  """`--config` value -> a config file: a path stays, a bare name is a shipped config.

  `NAME[:ARG]` where NAME has no '/' and no '.py' and is not a file here means
  jaxformer/configs/NAME.py; ARG (ml_collections' config string) is kept.
  """
  path, colon, arg = value.partition(':')
  if os.sep in path or '/' in path or path.endswith('.py') or os.path.exists(path):
    return value
  if not os.path.isfile(shipped_config(path)):
    shipped = importlib.resources.files('jaxformer.configs').iterdir()
    names = sorted(f.name[:-3] for f in shipped if f.name.endswith('.py') and f.name[0] != '_')
    raise ValueError(
      f'--config={value}: no such file, nor a shipped config of that name '
      f'(shipped: {", ".join(names)}); pass a config file path or one of those names'
    )
  return shipped_config(path) + colon + arg


def _config_error(error: BaseException) -> str | None:
  """'FILE, line N: Type: message' if the error came from a config file (or what it imports).

  Walks the chain of exceptions (ml_collections and absl re-raise a config's TypeError or
  ValueError) and names the innermost frame outside the flag-parsing machinery.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, SyntaxError) and error.filename:
      message = f'{type(error).__name__}: {error.msg}'
      return f'{error.filename}, line {error.lineno}: {message}'
    frames = [
      f
      for f in traceback.extract_tb(error.__traceback__)
      if not f.filename.startswith('<') and not os.path.abspath(f.filename).startswith(_MACHINERY)
    ]
    if frames:
      lines = str(error).strip().splitlines()
      message = f'{type(error).__name__}: {lines[0].strip() if lines else ""}'.rstrip(': ')
      return f'{frames[-1].filename}, line {frames[-1].lineno}: {message}'
    error = error.__cause__ or error.__context__
  return None


def _parse(argv: list[str]):
  """The config of a command line, overrides applied; ValueError (one line) if it is bad."""
  argv = [argv[0]] + [
    f'--config={resolve_config_arg(a.split("=", 1)[1])}' if a.startswith('--config=') else a
    for a in argv[1:]
  ]
  if not any(a.startswith('--config=') for a in argv[1:]):
    argv.insert(1, f'--config={shipped_config(DEFAULT_CONFIG)}')
  try:
    FLAGS(argv)
    config = FLAGS.config
    _ = config.task  # a config file that failed to load raises here, not at parse time
    return config
  except Exception as e:  # noqa: BLE001  (sorted below into a config file's error or ours)
    where = _config_error(e)
    if where:
      raise ValueError(f'cannot load config file: {where}') from None
    if isinstance(e, flags.Error):
      raise ValueError(str(e).strip().splitlines()[-1]) from None
    if isinstance(e, (KeyError, AttributeError, TypeError)):
      raise ValueError(f'bad config override: {e}') from None
    if isinstance(e, (OSError, ImportError)):
      cause = e.__cause__ or e
      name = FLAGS['config'].config_filename if 'config' in FLAGS else ''
      raise ValueError(
        f'cannot load config file {name!r}: {str(cause).strip().splitlines()[-1].strip()}'
      ) from None
    raise


def _distributed_init() -> None:
  """Joins a multi-host job when the environment describes one (TPU pods are auto-detected)."""
  import jax

  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    jax.distributed.initialize(
      coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
      num_processes=int(os.environ.get('JAX_NUM_PROCESSES', '1')),
      process_id=int(os.environ.get('JAX_PROCESS_ID', '0')),
    )
  elif os.environ.get('TPU_WORKER_HOSTNAMES', '').count(',') > 0:
    jax.distributed.initialize()  # multi-host TPU slice: everything comes from the metadata


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  verbose = '--verbose' in argv or '--verbose=true' in argv
  try:
    config = _parse(argv)
  except ValueError as e:
    return _fail(str(e), 2, verbose)
  config_name = os.path.splitext(os.path.basename(FLAGS['config'].config_filename))[0]
  workdir = FLAGS.workdir or os.path.join('runs', config_name)

  from jaxformer.checkpoint import CheckpointError
  from jaxformer.data import DataError
  from jaxformer.training import compile_cache
  from jaxformer.training.errors import ConfigError, Diverged

  try:
    _distributed_init()
    compile_cache.enable()
    from jaxformer.training.loop import train_and_evaluate

    train_and_evaluate(config, workdir)
  except (ConfigError, DataError, CheckpointError) as e:
    return _fail(str(e), 2, verbose)
  except Diverged as e:
    return _fail(str(e), 3, verbose)
  except OSError as e:  # a write or read the checks could not foresee (disk full, permissions)
    where = f': {e.filename}' if e.filename else ''
    return _fail(f'{e.strerror or e}{where}; free some space or fix the permissions', 2, verbose)
  except MemoryError:
    return _fail('out of memory: use a smaller model, batch_size or max_len', 2, verbose)
  except KeyboardInterrupt:
    return _fail('interrupted', 130)
  return 0


def cli() -> None:
  """The command line's exit: after a failure's one error line, nothing else is printed."""
  code = main()
  if code:
    # orbax's background writes (a checkpoint save that hit a full disk) leave futures whose
    # exceptions asyncio would log, and coroutines never awaited that Python warns about, at
    # interpreter exit, below the line the user must read.
    logging.getLogger('asyncio').setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda _: None
    warnings.simplefilter('ignore')
  sys.exit(code)
