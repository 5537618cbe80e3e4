"""English number words below a million: their value, and the digit labels depth_translation probes.

The number-word datasets write numbers as num2words spells them ("twenty-three thousand, four
hundred and five"); reading the value back from the words, rather than keeping it beside them,
lets a probe label any source sentence the model sees.
"""

from __future__ import annotations

import numpy as np

SMALL = tuple(
  'zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen '
  'fifteen sixteen seventeen eighteen nineteen'.split()
)
TENS = ('', '', *'twenty thirty forty fifty sixty seventy eighty ninety'.split())


def number_value(words: str) -> int:
  """The integer that English number words name: 'three hundred and six thousand, two' -> 306002."""
  total, part = 0, 0
  for word in words.replace(',', ' ').replace('-', ' ').split():
    if word in SMALL:
      part += SMALL.index(word)
    elif word in TENS:
      part += 10 * TENS.index(word)
    elif word == 'hundred':
      part *= 100
    elif word == 'thousand':
      total, part = total + 1000 * part, 0
    elif word != 'and':
      raise ValueError(f'{word!r} in {words!r} is not an English number word below a million')
  return total + part


def number_labels(numbers) -> dict:
  """{'units', 'tens', 'hundreds' (digits 0-9), 'thousands' (1 if >= 1000)}, each int [N]."""
  n = np.asarray(numbers, np.int64)
  return {
    'units': n % 10,
    'tens': n // 10 % 10,
    'hundreds': n // 100 % 10,
    'thousands': (n >= 1000).astype(np.int64),
  }
