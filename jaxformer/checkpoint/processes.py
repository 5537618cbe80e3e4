"""What the checkpoint modules share: agreeing across processes and one-line error text.

In a multi-host job every process runs the same checkpoint code; these helpers keep them on the
same branch (`everywhere`) and in step (`sync`). On one process both are free.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def sync(name: str) -> None:
  """A barrier named `name` across all processes (nothing on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def everywhere(ok: bool) -> bool:
  """True only if `ok` holds on every process, so all processes take the same branch."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.array([ok]))))


def short_error(error: BaseException) -> str:
  """'TypeName: first line of the message' (at most 300 characters), for one-line errors."""
  lines = str(error).strip().splitlines()
  return f'{type(error).__name__}: {lines[0][:300] if lines else ""}'


def jaxformer_version() -> str:
  """The installed jaxformer version, written into checkpoint metadata and exports."""
  import jaxformer  # imported late: jaxformer/__init__ may import this package

  return getattr(jaxformer, '__version__', 'unknown')
