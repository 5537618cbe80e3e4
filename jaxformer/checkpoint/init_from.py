"""Fine-tuning: start a new model from the matching part of a pretrained one.

A Shakespeare DecoderLM and a genre Classifier share an identical 'backbone' subtree (embeddings,
layers, final norm); only their heads differ. load_params_for_init copies the pretrained backbone
into the new model's freshly initialized parameters and leaves the new head as it was. Optimizer
state and step are not carried over: fine-tuning is a new run. The layer stack is converted when
the two runs differ in `scan_layers` (stacked 'layer' vs 'layer_0'..'layer_{N-1}').
"""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxformer.checkpoint import vocab
from jaxformer.checkpoint.errors import CheckpointError
from jaxformer.model import lora


def _flat(tree, prefix: str) -> dict[str, Any]:
  return {
    f'{prefix}/{jax.tree_util.keystr(p, simple=True, separator="/")}'.strip('/'): leaf
    for p, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


def _mismatches(source, target, prefix: str) -> list[str]:
  """One line per parameter whose shape differs, or that exists on one side only."""
  src, tgt = _flat(source, prefix), _flat(target, prefix)
  lines = []
  for path in sorted(set(src) | set(tgt)):
    if path not in src:
      lines.append(
        f'{path}: missing in the pretrained parameters (model {list(np.shape(tgt[path]))})'
      )
    elif path not in tgt:
      lines.append(f'{path}: unexpected, not in the model (pretrained {list(np.shape(src[path]))})')
    elif tuple(np.shape(src[path])) != tuple(np.shape(tgt[path])):
      lines.append(
        f'{path}: pretrained {list(np.shape(src[path]))} vs model {list(np.shape(tgt[path]))}'
      )
  return lines


def _is_scanned(tree) -> bool:
  return any(seg == 'layer' for path in _flat(tree, '') for seg in path.split('/'))


def _to_layout_of(source, target):
  """`source` with its layer stack in `target`'s layout (scan_layers True <-> False)."""
  from jaxformer.model.blocks import loop_to_scan, scan_to_loop

  if _is_scanned(target) and not _is_scanned(source):
    return loop_to_scan(source)
  if _is_scanned(source) and not _is_scanned(target):
    return scan_to_loop(source)
  return source


def _place_like(value, like):
  """`value` with the dtype and sharding of `like` (a fresh array or a ShapeDtypeStruct)."""
  host = np.asarray(value).astype(like.dtype)
  sharding = getattr(like, 'sharding', None)
  if sharding is None:
    return jax.numpy.asarray(host)
  # make_array_from_callback also works when `sharding` spans several processes.
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _vocab_padded_like(source, target):
  """`source` with its vocabulary tables padded (or unpadded) to `target`'s rows.

  A pretrained model padded differently (e.g. an imported GPT-2, padded to 1 instead of 128)
  then loads; only zero padding rows are added or dropped.
  """

  def resize(path, leaf):
    keys = tuple(str(getattr(k, 'key', k)) for k in path)
    axis = vocab.vocab_axis(keys)
    like = _leaf_at(target, keys)
    if axis is None or like is None or np.ndim(leaf) != len(like.shape):
      return leaf
    if np.shape(leaf)[axis] == like.shape[axis]:
      return leaf
    try:
      return vocab.with_vocab_size(leaf, like.shape[axis], axis)
    except ValueError as e:
      raise CheckpointError(f'{"/".join(keys)}: {e}') from None

  return jax.tree_util.tree_map_with_path(resize, source)


def _leaf_at(tree, keys):
  for key in keys:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def pretrained_params(path) -> Any:
  """Parameters of a run workdir (best step), a checkpoint directory, or an exported model."""
  from etils import epath

  from jaxformer.checkpoint.manager import Checkpointer
  from jaxformer.checkpoint.pretrained import EXPORT_FILE, load_pretrained

  root = epath.Path(path)
  if not root.exists():
    raise CheckpointError(
      f'init_from path {path} does not exist; pass a run workdir, its checkpoints/ or an export'
    )
  if (root / EXPORT_FILE).exists():
    return load_pretrained(root).params
  directory = root / 'checkpoints' if (root / 'checkpoints').is_dir() else root
  # read_only: never clean up or move anything in someone else's run.
  checkpointer = Checkpointer(directory, read_only=True, async_save=False)
  try:
    if not checkpointer.all_steps():
      raise CheckpointError(
        f'no checkpoints in {directory}; pass a run workdir, its checkpoints/ or an export'
      )
    _, params = checkpointer.restore_params()
  finally:
    checkpointer.close()
  return params


def load_params_for_init(
  path, target_params: Mapping[str, Any], *, subtree: str | None = 'backbone'
) -> dict:
  """target_params with its `subtree` replaced by the pretrained one from `path`.

  path: a run workdir (its best checkpoint), a checkpoint directory, or an export directory.
  target_params: the new model's freshly initialized params (arrays keep their sharding).
  subtree: top-level key to copy ('backbone'); None copies the whole tree.
  Raises CheckpointError listing every mismatched path with both shapes.
  """
  source = pretrained_params(path)
  if subtree is None:
    source_part, target_part, prefix = source, target_params, ''
  else:
    if subtree not in target_params:
      raise ValueError(
        f"the model has no '{subtree}' parameters (it has {sorted(target_params)}); "
        f'pass the right subtree= name'
      )
    if subtree not in source:
      raise CheckpointError(
        f"{path} has no '{subtree}' parameters (it has {sorted(source)}); "
        f'is it a jaxformer model with the same backbone?'
      )
    source_part, target_part, prefix = source[subtree], target_params[subtree], subtree
  source_part = _to_layout_of(dict(source_part), target_part)
  source_part = _vocab_padded_like(source_part, target_part)
  # A LoRA model starting from a plain one keeps its freshly initialised adapters.
  adapters = {} if lora.has_factors(source_part) else lora.only_factors(target_part)
  if adapters:
    target_part = lora.without_factors(target_part)
  lines = _mismatches(source_part, target_part, prefix)
  if lines:
    raise CheckpointError(
      f'cannot initialize from {path}: {len(lines)} parameter(s) do not match the model; use the '
      f"pretrained run's model config and tokenizer (vocab_size, d_model, layers...):\n  "
      + '\n  '.join(lines)
    )
  grafted = jax.tree.map(_place_like, source_part, target_part)
  if adapters:
    grafted = lora.with_factors(grafted, adapters)
  if subtree is None:
    return grafted
  params = dict(target_params)
  params[subtree] = grafted
  return params
