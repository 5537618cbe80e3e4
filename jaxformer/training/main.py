"""The command line: `python train.py --config=configs/NAME.py --workdir=DIR [--config.key=value ...]`.

Exit codes: 0 done (or stopped early, or preempted and saved), 2 bad config or input (one line on
stderr, nothing written), 3 training diverged.
"""

from __future__ import annotations

import os
import sys
import traceback

from absl import flags
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEFAULT_CONFIG = os.path.join(_REPO, 'configs', 'shakespeare_lm.py')

FLAGS = flags.FlagValues()
config_flags.DEFINE_config_file(
  'config', _DEFAULT_CONFIG, 'Training config file.', flag_values=FLAGS, lock_config=True
)
flags.DEFINE_string(
  'workdir', None, 'Run directory (default: runs/<config name>).', flag_values=FLAGS
)
flags.DEFINE_bool('verbose', False, 'Show tracebacks for errors.', flag_values=FLAGS)


def _fail(message: str, code: int, verbose: bool = False) -> int:
  if verbose:
    traceback.print_exc()
  print(f'error: {message}', file=sys.stderr, flush=True)
  return code


def _parse(argv: list[str]):
  # Config files import `configs.default`: make the directory above configs/ importable.
  sys.path.insert(0, _REPO)
  for arg in argv:
    if arg.startswith('--config='):
      sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(arg.split('=', 1)[1]))))
  try:
    FLAGS(argv)
    config = FLAGS.config
    config.task  # a config file that failed to load raises here, not at parse time
    return config
  except flags.Error as e:
    raise ValueError(str(e).strip().splitlines()[-1]) from None
  except (KeyError, AttributeError, TypeError) as e:
    raise ValueError(f'bad config override: {e}') from None
  except (OSError, ImportError, SyntaxError) as e:
    cause = e.__cause__ or e
    where = FLAGS['config'].config_filename if 'config' in FLAGS else ''
    raise ValueError(
      f'cannot load config file {where!r}: {str(cause).strip().splitlines()[-1].strip()}'
    ) from None


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


def _compilation_cache() -> None:
  """A persistent XLA cache: the second run of a config skips most compilation."""
  import jax

  path = os.environ.get(
    'JAXFORMER_COMPILATION_CACHE',
    os.path.join(os.path.expanduser('~'), '.cache', 'jaxformer', 'xla'),
  )
  if path:
    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.3)


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
  from jaxformer.training.errors import ConfigError, Diverged

  try:
    _distributed_init()
    _compilation_cache()
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
  sys.exit(main())
