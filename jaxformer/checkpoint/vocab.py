"""Vocabulary tables between padded sizes (ModelConfig.vocab_multiple).

A model's token table is [padded V, D] and an untied output head [D, padded V]; the rows past
the real vocabulary are zeros that never train. Weights move between models that pad
differently (a Hugging Face GPT-2 has none, a jaxformer run pads to 128) by adding or dropping
those rows; the real rows are never touched.
"""

from __future__ import annotations

import numpy as np

# Parameter path suffix -> the axis that indexes the vocabulary.
VOCAB_AXES = {('token_embed', 'embedding'): 0, ('lm_head', 'kernel'): 1}


def vocab_axis(path: tuple[str, ...]) -> int | None:
  """The vocabulary axis of the parameter at `path` (its keys), or None for other parameters."""
  return VOCAB_AXES.get(tuple(path[-2:]))


def with_vocab_size(table, size: int, axis: int) -> np.ndarray:
  """`table` with `size` entries along `axis`: zero rows added, or padded rows dropped.

  Dropping refuses rows that are not zero: they would be real tokens.
  """
  table = np.asarray(table)
  have = table.shape[axis]
  if have >= size:
    dropped = np.take(table, np.arange(size, have), axis=axis)
    if np.any(dropped):
      raise ValueError(
        f'cannot shrink a vocabulary table from {have} to {size} entries: the entries past '
        f'{size} are not padding (not zero)'
      )
    return np.take(table, np.arange(size), axis=axis)
  pad = [(0, 0)] * table.ndim
  pad[axis] = (0, size - have)
  return np.pad(table, pad)
