"""Keep freed host memory mapped, so XLA:CPU does not page-fault its temporaries in every step.

XLA:CPU allocates the temporaries of each execution with malloc and frees them when it ends.
For config S's train step that is one 1.55 GB block. glibc serves a block that large with mmap
and hands it back with munmap, so the next step touches fresh pages: 378,511 minor page faults
and about 0.5 s of kernel time in a 3.2 s step on one core of an Intel Xeon VM
(docs/performance.md). Three glibc settings make malloc reuse the block instead:

- one arena (M_ARENA_MAX=1): a thread's own arena is capped at 64 MB and serves bigger blocks
  with mmap whatever the other settings say (measured: with several arenas, a 1-2 GB mmap
  threshold and no trimming, the block was still mapped and unmapped every step);
- no mmap (M_MMAP_MAX=0): big blocks come from the heap; if the heap cannot grow, glibc still
  falls back to mmap, so allocation never fails for this;
- no trimming (M_TRIM_THRESHOLD -1): freed memory at the top of the heap stays.

The cost: the process keeps its high-water mark of host memory until it exits, and all threads
share one malloc lock. In the peer benchmark's runs the peak itself did not grow, and on two
vCPUs the default LM still trained about 1.2x faster with the shared lock (docs/performance.md).
That suits a training process on a CPU. It does not suit a host that feeds an accelerator, so
the settings apply only when jax will run on the CPU: no accelerator plugin is installed, or
JAX_PLATFORMS is 'cpu'. They must be in place before any thread has its own arena; `import
jaxformer` applies them first thing (train.py imports it before anything else), and skips them
when jax, torch or tensorflow is already imported. Set JAXFORMER_KEEP_HOST_MEMORY=0 to leave
malloc as it is.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform
import sys

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim

ENV = 'JAXFORMER_KEEP_HOST_MEMORY'
# Imported, these have started threads that may hold malloc arenas of their own.
THREADED = ('jax', 'jaxlib', 'torch', 'tensorflow')

_applied = False


def glibc_linux() -> bool:
  """The settings exist only in glibc's malloc on Linux (not musl, macOS or Windows)."""
  return sys.platform == 'linux' and platform.libc_ver()[0] == 'glibc'


def runs_on_cpu() -> bool:
  """True when jax will run on the CPU: JAX_PLATFORMS starts with 'cpu', or no jax GPU/TPU
  plugin is installed."""
  if os.environ.get('JAX_PLATFORMS', '').split(',')[0].strip() == 'cpu':
    return True
  if importlib.util.find_spec('libtpu') is not None:
    return False
  return not any(True for _ in importlib.metadata.entry_points(group='jax_plugins'))


def keep_freed_memory() -> bool:
  """Applies the settings above, once per process; returns whether they are in effect.

  Skipped (False) when JAXFORMER_KEEP_HOST_MEMORY is 0/false/off/no, off glibc Linux, when jax
  will not run on the CPU, or when a library in THREADED is already imported: set late, the
  one-arena limit does not reach arenas that threads already hold, and steps fault again at
  random.
  """
  global _applied
  if _applied:
    return True
  if os.environ.get(ENV, '1').strip().lower() in ('0', 'false', 'off', 'no'):
    return False
  if not glibc_linux() or any(name in sys.modules for name in THREADED) or not runs_on_cpu():
    return False
  libc = ctypes.CDLL('libc.so.6')
  _applied = all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
  return _applied
