"""Keep freed host memory mapped, so XLA:CPU does not page-fault its temporaries in every step.

XLA:CPU allocates the temporaries of each execution with malloc and frees them when it ends.
For config S's train step that is one 1.55 GB block. glibc serves a block that large with mmap
and hands it back with munmap, so the next step touches fresh pages: 378,511 minor page faults
and about 0.5 s of kernel time in a 3.2 s step on one core of an Intel Xeon VM
(docs/performance.md). Three glibc settings make malloc reuse the block instead:

- one arena (M_ARENA_MAX=1): a thread's own arena is capped at 64 MB and serves bigger blocks
  with mmap whatever the other settings say (measured: without this one, the block is still
  mapped and unmapped every step);
- no mmap (M_MMAP_MAX=0): big blocks come from the heap; if the heap cannot grow, glibc still
  falls back to mmap, so allocation never fails for this;
- no trimming (M_TRIM_THRESHOLD at its maximum): freed memory at the top of the heap stays.

The cost: the process keeps its high-water mark of host memory until it exits (the peak itself
did not grow: 2,249 MB against 2,293 MB before, in docs/performance.md's runs P4 and P3), and all
threads share one malloc lock. That suits a training process on a CPU. It
does not suit a host that feeds an accelerator, so the settings apply only where no jax
accelerator plugin is installed. They must be in place before jax starts its CPU client and
threads; `import jaxformer` applies them first thing when jax is not imported yet (train.py
does so). Set JAXFORMER_KEEP_HOST_MEMORY=0 to leave malloc as it is.
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
_INT_MAX = 2**31 - 1

_applied = False


def has_accelerator_plugin() -> bool:
  """True when a jax GPU or TPU plugin is installed (jax would then run on it by default)."""
  if importlib.util.find_spec('libtpu') is not None:
    return True
  return any(True for _ in importlib.metadata.entry_points(group='jax_plugins'))


def keep_freed_memory() -> bool:
  """Applies the settings above, once per process; returns whether they are in effect.

  Skipped (False) when JAXFORMER_KEEP_HOST_MEMORY=0, off Linux/glibc, when an accelerator
  plugin is installed, or when jax is already imported: set late, the one-arena limit does not
  reach arenas that threads already hold, and steps would fault again at random.
  """
  global _applied
  if _applied:
    return True
  if os.environ.get('JAXFORMER_KEEP_HOST_MEMORY', '1') == '0':
    return False
  if sys.platform != 'linux' or platform.libc_ver()[0] != 'glibc':
    return False
  if 'jax' in sys.modules or has_accelerator_plugin():
    return False
  libc = ctypes.CDLL('libc.so.6')
  settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _INT_MAX))
  _applied = all(libc.mallopt(param, value) == 1 for param, value in settings)
  return _applied
