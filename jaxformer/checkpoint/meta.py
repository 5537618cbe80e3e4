"""The metadata JSON saved beside each checkpoint step's arrays, and its check on read.

orbax stores the arrays; this record says what they should be (per-array shape, dtype and sha256
from `integrity.describe`), which items the step holds, its val_loss, and the caller's `extra`
(data iterator state, callbacks, config). A restore verifies the arrays against it.
"""

import datetime
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.checkpoint import integrity
from jaxformer.checkpoint.processes import jaxformer_version

ITEM = 'meta'  # the orbax item name of this record
FORMAT_VERSION = 1


def record(step: int, state: Mapping[str, Any], *, extra: dict | None, val_loss: float | None):
  """The JSON-able record of `state` saved at `step`; a ValueError if `extra` is not JSON-able."""
  meta = {
    'format_version': FORMAT_VERSION,
    'jaxformer_version': jaxformer_version(),
    'time': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'step': step,
    'val_loss': val_loss,
    'items': sorted(state),
    'extra': dict(extra or {}),
    'arrays': integrity.describe(state),
  }
  try:
    json.dumps(meta)
  except (TypeError, ValueError) as e:
    raise ValueError(
      f'checkpoint extra is not JSON-serializable ({e}); pass plain dicts, lists, str and numbers'
    ) from e
  return meta


def unusable_reason(meta) -> str | None:
  """Why a record read back cannot be used to verify a restore, or None if it can."""
  if (
    isinstance(meta, dict)
    and isinstance(meta.get('arrays'), dict)
    and isinstance(meta.get('items'), list)
  ):
    return None
  return "metadata JSON lacks 'arrays'/'items'"


def array_bytes(meta: dict) -> int:
  """Bytes of the arrays a record describes: roughly the disk space its save needs."""
  total = 0
  for array in meta['arrays'].values():
    try:
      itemsize = np.dtype(array['dtype']).itemsize
    except TypeError:  # a dtype numpy does not name (typed PRNG keys): count 4 bytes
      itemsize = 4
    total += int(np.prod(array['shape'])) * itemsize
  return total
