"""Abstract restore targets: shapes, dtypes and shardings, never data.

Every restore goes into a target tree of jax.ShapeDtypeStruct. It keeps optax's tuples as tuples
(orbax without a target returns lists) and places each array directly onto the mesh it names,
which may differ from the mesh it was saved from.
"""

from collections.abc import Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxformer import sharding as jf_sharding

LEAF_KEY = 'value'


def is_key(x) -> bool:
  """True for typed PRNG key arrays (and their ShapeDtypeStructs)."""
  dtype = getattr(x, 'dtype', None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def abstract_like(tree, shardings=None):
  """ShapeDtypeStruct tree to restore into, built from real (or abstract) arrays.

  shardings: None keeps each array's own sharding; a single Sharding applies to every array;
  a tree of Shardings matching `tree` places each array (e.g. onto a different mesh).
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  if shardings is None:
    return abstract

  def place(leaf, sharding):
    if isinstance(leaf, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    return leaf  # Python scalars have no sharding

  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda leaf: place(leaf, shardings), abstract)
  return jax.tree.map(place, abstract, shardings)


def restore_target(tree):
  """Turns any target (arrays, ShapeDtypeStructs, typed keys) into what StandardRestore wants."""

  def one(leaf):
    if isinstance(leaf, (jax.Array, np.ndarray)) or is_key(leaf):
      sharding = getattr(leaf, 'sharding', None)
      if is_key(leaf):
        # Keys are restored from their uint32 data; orbax's metadata turns them back into keys.
        leaf = jax.eval_shape(jax.random.key_data, leaf)
      leaf = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
      leaf = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=jf_sharding.unplaced_default())
    return leaf

  return jax.tree.map(one, tree)


def nested_target(records: Mapping[str, dict], item: str, sharding) -> dict:
  """Abstract tree of one dict-of-dicts item (e.g. 'params') rebuilt from its records.

  Used to restore parameters without knowing the model: the records say every path, shape and
  dtype. Only valid for nested dicts whose keys contain no '/', which flax params are.
  """
  target = {}
  for path, record in records.items():
    head, _, rest = path.partition('/')
    if head != item or not rest:
      continue
    *parents, name = rest.split('/')
    node = target
    for key in parents:
      node = node.setdefault(key, {})
    node[name] = jax.ShapeDtypeStruct(
      tuple(record['shape']), jax.numpy.dtype(record['dtype']), sharding=sharding
    )
  return target


def is_leaf_item(tree) -> bool:
  return tree is not None and jax.tree_util.treedef_is_leaf(jax.tree.structure(tree))


def wrap(tree):
  """StandardSave needs a container: a bare leaf item x (a step, a key) is saved as {'value': x}."""
  return {LEAF_KEY: tree} if is_leaf_item(tree) else tree


def unwrap(restored, like):
  return restored[LEAF_KEY] if is_leaf_item(like) else restored
