"""XLA's persistent compilation cache, one directory per number of usable CPU cores.

A second run of the same config reads its compiled programs from disk instead of compiling them
again (train.py and the experiments turn this on; JAXFORMER_COMPILATION_CACHE='' turns it off).

jax keys a cached program by its HLO, the jax/XLA versions, the devices and the XLA flags, but not
by the CPU cores the process may use. XLA:CPU splits the work of a program across the cores it sees
when it compiles, so a program compiled in a process pinned to one core (`taskset -c 0`) runs on
one core's plan in every later process that finds it in the cache. Measured on a 2-vCPU Intel
Xeon VM, over the default LM's steps 50-175 on both cores: 6,500-6,950 tokens/s with the train
step compiled on one core, 8,480-8,730 with it compiled on two (1.24-1.30x; docs/performance.md).
Keying the directory by the core count gives each process a program planned for its cores; the
cost is one compilation per core count a machine runs with.
"""

from __future__ import annotations

import os

ENV = 'JAXFORMER_COMPILATION_CACHE'
MIN_COMPILE_SECONDS = 0.3  # quicker compilations are not worth a file


def default_root() -> str:
  return os.path.join(os.path.expanduser('~'), '.cache', 'jaxformer', 'xla')


def usable_cores() -> int:
  """The cores this process may run on: its affinity mask where the OS has one."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):  # no affinity call (macOS, Windows), or a sandbox refuses it
    return os.cpu_count() or 1


def directory(root: str | None = None) -> str | None:
  """`root`/cpus-N, N the usable cores; None when the cache is off (JAXFORMER_COMPILATION_CACHE
  set to '')."""
  root = os.environ.get(ENV, default_root()) if root is None else root
  return os.path.join(root, f'cpus-{usable_cores()}') if root else None


def enable(root: str | None = None) -> str | None:
  """Points jax's persistent cache at `directory(root)`; returns it (None: left off)."""
  path = directory(root)
  if path:
    import jax

    jax.config.update('jax_compilation_cache_dir', path)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
  return path
