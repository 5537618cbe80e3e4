"""Shared check of a LoRA fine-tuning run: its base weights are the pretrained ones, unchanged,
and its adapters trained (tests/test_lora.py, tests/test_hf_gpt2.py)."""

import jax
import numpy as np

from jaxformer.checkpoint import load_pretrained
from jaxformer.model import lora
from jaxformer.model.blocks import loop_to_scan, scan_to_loop


def by_path(tree) -> dict:
  return {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def assert_equal_but_vocab_padding(tuned, pretrained, where: str) -> None:
  """`tuned` equals `pretrained`, except that a vocabulary table may have more rows, all zero
  (training pads the table to a multiple of vocab_multiple; the padding rows stay zero)."""
  tuned, pretrained = np.asarray(tuned), np.asarray(pretrained)
  if tuned.shape != pretrained.shape:
    differ = [i for i, (a, b) in enumerate(zip(tuned.shape, pretrained.shape)) if a != b]
    assert tuned.ndim == pretrained.ndim and len(differ) == 1, (where, tuned.shape)
    (axis,) = differ
    rows = pretrained.shape[axis]
    assert tuned.shape[axis] > rows, (where, tuned.shape, pretrained.shape)
    assert not np.any(np.take(tuned, np.arange(rows, tuned.shape[axis]), axis=axis)), where
    tuned = np.take(tuned, np.arange(rows), axis=axis)
  np.testing.assert_array_equal(tuned, pretrained, err_msg=where)


def assert_base_frozen_and_adapters_moved(run, base, rank: int = 2):
  """The LoRA run `run` (workdir or export), fine-tuned from `base`: its backbone without the
  adapters is `base`'s bit for bit, and every lora_b factor (zero at init) moved. Returns the
  loaded run."""
  source, tuned = load_pretrained(base), load_pretrained(run)
  assert tuned.model_config.lora_rank == rank and lora.has_factors(tuned.params)
  frozen = lora.without_factors(tuned.params)['backbone']
  pretrained = source.params['backbone']
  if tuned.model_config.scan_layers != source.model_config.scan_layers:
    # The fine-tuning run picks its own layer layout (scan_layers='auto'); compare in that one.
    convert = scan_to_loop if source.model_config.scan_layers else loop_to_scan
    pretrained = convert(pretrained)
  frozen, pretrained = by_path(frozen), by_path(pretrained)
  assert sorted(frozen) == sorted(pretrained)
  for path, leaf in frozen.items():
    assert_equal_but_vocab_padding(leaf, pretrained[path], path)
  b_factors = [x for p, x in by_path(tuned.params).items() if 'lora_b' in p]
  assert b_factors and all(np.abs(np.asarray(x)).max() > 0 for x in b_factors)
  return tuned
