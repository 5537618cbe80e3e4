"""Number-word translation pairs: English words -> German or French words, made with num2words.

  423   "four hundred and twenty-three" -> "vierhundertdreiundzwanzig"  (de)
                                        -> "quatre cent vingt-trois"     (fr)

German writes units before tens and joins everything into one word, so a model must reorder
("twenty-three" -> "drei-und-zwanzig"): a small but real task for cross-attention.

Splits (no number appears in two splits):
  train       all of 0..999, plus numbers drawn evenly from each magnitude 1,000..9,999,
              10,000..99,999 and 100,000..999,999, so every magnitude is seen in training;
  validation  and test: drawn the same way from 1,000..999,999.
"""

import random

from num2words import num2words

LANGUAGES = ('de', 'fr')
MAGNITUDES = ((1_000, 9_999), (10_000, 99_999), (100_000, 999_999))  # inclusive ranges


def split_numbers(
  seed: int = 0, train_size: int = 20_000, validation_size: int = 1_000, test_size: int = 1_000
) -> dict[str, list[int]]:
  """Disjoint sorted lists of numbers per split; every magnitude up to 999,999 is in train."""
  if train_size < 1_000 + len(MAGNITUDES):
    raise ValueError(
      f'train_size must be at least {1_000 + len(MAGNITUDES)} (all of 0..999 plus each magnitude)'
    )
  rng = random.Random(seed)
  sizes = {'train': train_size - 1_000, 'validation': validation_size, 'test': test_size}
  out = {'train': list(range(1_000)), 'validation': [], 'test': []}
  for m, (lo, hi) in enumerate(MAGNITUDES):
    # Split each split's quota evenly over the magnitudes; the first ones take the remainder.
    share = {s: n // len(MAGNITUDES) + (m < n % len(MAGNITUDES)) for s, n in sizes.items()}
    drawn = rng.sample(range(lo, hi + 1), sum(share.values()))  # without replacement: disjoint
    start = 0
    for split in ('train', 'validation', 'test'):
      out[split] += drawn[start : start + share[split]]
      start += share[split]
  return {split: sorted(numbers) for split, numbers in out.items()}


def number_pair(n: int, language: str) -> dict:
  """{'source': English words, 'target': words in `language`, 'number': n}."""
  return {'source': num2words(n, lang='en'), 'target': num2words(n, lang=language), 'number': n}
