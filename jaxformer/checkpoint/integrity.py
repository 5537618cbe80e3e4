"""Per-array fingerprints: what a checkpoint should contain, and whether it still does.

orbax restores a checkpoint with a flipped byte silently, with wrong values. So at save time we
record, for every array leaf, its shape, dtype and the sha256 of its bytes, keyed by a readable
path such as 'params/backbone/embed/embedding'. At restore time the same record is computed from
the restored values and compared. The record also lets us refuse a restore target of the wrong
shape *before* reading any data, which keeps "your model changed" apart from "the file is bad".
"""

import hashlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxformer.checkpoint.abstract import is_key


def leaf_path(item: str, keypath) -> str:
  """'params' + (DictKey('backbone'), DictKey('w')) -> 'params/backbone/w'."""
  rest = jax.tree_util.keystr(keypath, simple=True, separator='/')
  return f'{item}/{rest}' if rest else item


def host_array(leaf) -> np.ndarray:
  """The full (global) value of one leaf as a numpy array on this host.

  Typed PRNG keys are hashed through their raw uint32 data. Arrays sharded across processes are
  gathered first, so every process computes the same digest for the same global value.
  """
  if is_key(leaf):
    leaf = jax.random.key_data(leaf)
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
  return np.asarray(leaf)


def _sha256(array: np.ndarray) -> str:
  # A uint8 view hashes the raw bytes of any dtype (bfloat16 included) without a copy.
  flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
  return hashlib.sha256(flat).hexdigest()


def describe(state: Mapping[str, Any]) -> dict[str, dict]:
  """{path: {'shape': [...], 'dtype': str, 'sha256': hex}} for every leaf of every item."""
  records = {}
  for item, tree in state.items():
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(tree):
      array = host_array(leaf)
      records[leaf_path(item, keypath)] = {
        'shape': list(array.shape),
        'dtype': str(array.dtype),
        'sha256': _sha256(array),
      }
  return records


def _abstract_shape_dtype(leaf) -> tuple[tuple, str]:
  """Shape and dtype a target leaf expects, in the same terms describe() records them."""
  if is_key(leaf):
    # Keys are recorded through key_data: a key<fry>[] becomes uint32[2].
    leaf = jax.eval_shape(jax.random.key_data, leaf)
  if hasattr(leaf, 'shape') and hasattr(leaf, 'dtype'):
    return tuple(leaf.shape), str(np.dtype(leaf.dtype))
  return (), str(np.asarray(leaf).dtype)  # a Python scalar


def structure_mismatches(
  abstract_state: Mapping[str, Any], records: Mapping[str, dict]
) -> list[str]:
  """Lines describing how a restore target differs from what a checkpoint recorded.

  Only the items present in abstract_state are compared, so restoring 'params' alone works.
  An empty list means the target fits.
  """
  lines = []
  wanted = {}
  for item, tree in abstract_state.items():
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(tree):
      wanted[leaf_path(item, keypath)] = _abstract_shape_dtype(leaf)
  saved = {p: r for p, r in records.items() if p.split('/', 1)[0] in abstract_state}
  for path in sorted(wanted):
    if path not in saved:
      lines.append(f'{path}: in the model but not in the checkpoint')
      continue
    shape, dtype = wanted[path]
    saved_shape, saved_dtype = tuple(saved[path]['shape']), saved[path]['dtype']
    if (shape, dtype) != (saved_shape, saved_dtype):
      lines.append(
        f'{path}: checkpoint {saved_dtype}{list(saved_shape)} vs model {dtype}{list(shape)}'
      )
  for path in sorted(set(saved) - set(wanted)):
    lines.append(f'{path}: in the checkpoint but not in the model')
  return lines


def checksum_mismatches(state: Mapping[str, Any], records: Mapping[str, dict]) -> list[str]:
  """Paths whose restored bytes differ from the bytes that were saved."""
  actual = describe(state)
  return sorted(
    p for p, r in actual.items() if p not in records or records[p]['sha256'] != r['sha256']
  )
