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
interpolation. Every number whose thousands part (n // 1000) is in HELD_OUT_THOUSANDS is kept out of
train and validation; `test` is drawn from exactly those numbers, `test_iid` the old way. Each held
value (say 23) is in train as a number of its own ("dreiundzwanzig") and before other hundreds, but
never before "tausend": to write 23,456 the model must put together two forms it learned apart.
"""

import random

from num2words import num2words

LANGUAGES = ('de', 'fr')
MAGNITUDES = ((1_000, 9_999), (10_000, 99_999), (100_000, 999_999))  # inclusive ranges


def _held_out_thousands(seed: int = 2026) -> tuple[int, ...]:
  """50 thousands parts, drawn per magnitude of the thousands part itself (1 of 1..9, 9 of 10..99,
  40 of 100..999: about its share of 1..999), so every magnitude of the numbers is tested. One of
  1..9 only: holding out two would leave 7,000 four-digit numbers for the 7,001 the splits draw."""
  rng = random.Random(seed)
  picks = [rng.sample(range(lo, hi + 1), k) for (lo, hi), k in (((1, 9), 1), ((10, 99), 9))]
  picks.append(rng.sample(range(100, 1_000), 40))
  return tuple(sorted(n for pick in picks for n in pick))


HELD_OUT_THOUSANDS = _held_out_thousands()


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

  With `systematic`, train, validation and test_iid avoid HELD_OUT_THOUSANDS and `test` is drawn
  from them (see the module docstring). Without it the splits are those the results were measured
  on, draw for draw.
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
    if held:
      novel = [n for n in range(lo, hi + 1) if n // 1_000 in held]
      out.setdefault('test', []).extend(rng.sample(novel, _share(test_size, m)))
  return {split: sorted(numbers) for split, numbers in out.items()}


def number_pair(n: int, language: str) -> dict:
  """{'source': English words, 'target': words in `language`, 'number': n}."""
  return {'source': num2words(n, lang='en'), 'target': num2words(n, lang=language), 'number': n}
