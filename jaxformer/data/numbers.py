"""Number-word translation pairs: English words -> German or French words, made with num2words.

  423   "four hundred and twenty-three" -> "vierhundertdreiundzwanzig"  (de)
                                        -> "quatre cent vingt-trois"     (fr)

German writes units before tens and joins everything into one word, so a model must reorder
("twenty-three" -> "drei-und-zwanzig"): a small but real task for cross-attention.

Splits (no number appears in two splits):
  train       all of 0..999, plus numbers drawn evenly from each magnitude 1,000..9,999,
              10,000..99,999 and 100,000..999,999, so every magnitude is seen in training;
  validation  and test: drawn the same way from 1,000..999,999.

The systematic variant (en_de_systematic, en_fr_systematic) asks for composition instead of
interpolation. Five two-digit endings (HELD_OUT_ENDINGS, say 23) are chosen; every number whose
thousands part ends in one of them (23,xxx, 123,xxx, ..., 923,xxx: the 50 thousands parts in
HELD_OUT_THOUSANDS) is kept out of train and validation. So "twenty-three thousand" and
"dreiundzwanzigtausend" never occur in training, in any number, while "dreiundzwanzig" occurs
as units (1,023) and "tausend" after every other value. `test` is drawn from exactly those
numbers, `test_iid` the old way: to write 123,456 the model must put together two forms it
learned apart.
"""

import random

from num2words import num2words

LANGUAGES = ('de', 'fr')
MAGNITUDES = ((1_000, 9_999), (10_000, 99_999), (100_000, 999_999))  # inclusive ranges


def _held_out_endings(seed: int = 2026) -> tuple[int, ...]:
  """Five two-digit endings, not multiples of ten: '...zwanzig' ends every '...undzwanzig', so
  holding out 20 would hold out nothing the model could not still read off 21-29."""
  return tuple(sorted(random.Random(seed).sample([n for n in range(11, 100) if n % 10], 5)))


HELD_OUT_ENDINGS = _held_out_endings()
HELD_OUT_THOUSANDS = tuple(h * 100 + e for e in HELD_OUT_ENDINGS for h in range(10))  # 50 values


def _share(total: int, m: int) -> int:
  """Magnitude m's part of `total`, split evenly; the first magnitudes take the remainder."""
  return total // len(MAGNITUDES) + (m < total % len(MAGNITUDES))


def split_numbers(
  seed: int = 0,
  train_size: int = 20_000,
  validation_size: int = 1_000,
  test_size: int = 1_000,
  systematic: bool = False,
) -> dict[str, list[int]]:
  """Disjoint sorted lists of numbers per split; every magnitude up to 999,999 is in train.

  With `systematic`, train, validation and test_iid avoid the numbers whose thousands part is in
  HELD_OUT_THOUSANDS and `test` is drawn from them (see the module docstring). Without it the
  splits are those the results were measured on, draw for draw.
  """
  if train_size < 1_000 + len(MAGNITUDES):
    raise ValueError(
      f'train_size must be at least {1_000 + len(MAGNITUDES)} (all of 0..999 plus each magnitude)'
    )
  rng = random.Random(seed)
  in_distribution = 'test_iid' if systematic else 'test'
  sizes = {'train': train_size - 1_000, 'validation': validation_size, in_distribution: test_size}
  out = {'train': list(range(1_000)), **{split: [] for split in sizes if split != 'train'}}
  held = set(HELD_OUT_THOUSANDS) if systematic else set()
  for m, (lo, hi) in enumerate(MAGNITUDES):
    share = {split: _share(n, m) for split, n in sizes.items()}
    pool = [n for n in range(lo, hi + 1) if n // 1_000 not in held] if held else range(lo, hi + 1)
    drawn = rng.sample(pool, sum(share.values()))  # without replacement: disjoint
    start = 0
    for split in sizes:
      out[split] += drawn[start : start + share[split]]
      start += share[split]
  if held:  # test: split evenly over the magnitudes that hold such numbers (10,000 and up)
    novel = [[n for n in range(lo, hi + 1) if n // 1_000 in held] for lo, hi in MAGNITUDES]
    novel = [numbers for numbers in novel if numbers]
    out['test'] = [
      n
      for m, numbers in enumerate(novel)
      for n in rng.sample(numbers, test_size // len(novel) + (m < test_size % len(novel)))
    ]
  return {split: sorted(numbers) for split, numbers in out.items()}


def number_pair(n: int, language: str) -> dict:
  """{'source': English words, 'target': words in `language`, 'number': n}."""
  return {'source': num2words(n, lang='en'), 'target': num2words(n, lang=language), 'number': n}
