"""Number-word translation pairs: English words -> German or French words, made with num2words.

  423   "four hundred and twenty-three" -> "vierhundertdreiundzwanzig"  (de)
                                        -> "quatre cent vingt-trois"     (fr)

German writes units before tens and joins everything into one word, so a model must reorder
("twenty-three" -> "drei-und-zwanzig"): a small but real task for cross-attention.

Splits (no number appears in two splits):
  train       all of 0..999, plus numbers drawn evenly from each magnitude 1,000..9,999,
              10,000..99,999 and 100,000..999,999, so every magnitude is seen in training;
  validation  and test: drawn the same way from 1,000..999,999.

Two systematic variants ask for composition instead of interpolation; `test` is drawn from the
numbers they hold out of train and validation, `test_iid` the old way.

  thousands (en_de_systematic, en_fr_systematic): five two-digit endings (HELD_OUT_ENDINGS,
      say 23) are chosen; every number whose thousands part ends in one of them (23,xxx,
      123,xxx, ..., 923,xxx: the 50 thousands parts in HELD_OUT_THOUSANDS) is held out. So
      "dreiundzwanzigtausend" never occurs in training, while "dreiundzwanzig" occurs as units
      (1,023) and "tausend" after every other value: the model joins two forms it learned apart.
  pairs (en_de_unseen_pairs, en_fr_unseen_pairs): five tens-units pairs (HELD_OUT_PAIRS, say 73)
      never occur anywhere in training, neither as the last two digits nor in the thousands
      part. "seventy-three" and "dreiundsiebzig" are new words; "drei" and "siebzig" are not
      ("dreiundsechzig", "zweiundsiebzig"). Meant as the harder test, since every model solves
      the thousands split; measured, it is solved too (docs/results.md): the SentencePiece
      pieces of an unseen word ("zwei" + "undsech" + "zig") are all seen in training.
"""

import random

from num2words import num2words

LANGUAGES = ('de', 'fr')
MAGNITUDES = ((1_000, 9_999), (10_000, 99_999), (100_000, 999_999))  # inclusive ranges
HOLDOUTS = ('none', 'thousands', 'pairs')


def _held_out_endings(seed: int = 2026) -> tuple[int, ...]:
  """Five two-digit endings, not multiples of ten: '...zwanzig' ends every '...undzwanzig', so
  holding out 20 would hold out nothing the model could not still read off 21-29."""
  return tuple(sorted(random.Random(seed).sample([n for n in range(11, 100) if n % 10], 5)))


HELD_OUT_ENDINGS = _held_out_endings()
HELD_OUT_THOUSANDS = tuple(h * 100 + e for e in HELD_OUT_ENDINGS for h in range(10))  # 50 values


def _held_out_pairs(seed: int = 2027) -> tuple[int, ...]:
  """Five tens-units pairs in 21..99 with five different tens and five different units digits,
  so every tens word and every units word still occurs in training beside most other partners.
  Teens are excluded: 'thirteen' -> 'dreizehn' is a word to learn, not a rule to apply."""
  rng = random.Random(seed)
  while True:
    pairs = rng.sample([n for n in range(21, 100) if n % 10], 5)
    if len({n // 10 for n in pairs}) == len({n % 10 for n in pairs}) == 5:
      return tuple(sorted(pairs))


HELD_OUT_PAIRS = _held_out_pairs()
_THOUSANDS, _PAIRS = frozenset(HELD_OUT_THOUSANDS), frozenset(HELD_OUT_PAIRS)  # fast lookups


def is_held_out(n: int, holdout: str) -> bool:
  """Whether `holdout` keeps n out of train, validation and test_iid (HOLDOUTS)."""
  if holdout == 'thousands':
    return n // 1_000 in _THOUSANDS
  if holdout == 'pairs':
    return n % 100 in _PAIRS or n // 1_000 % 100 in _PAIRS
  return False


def _share(total: int, m: int) -> int:
  """Magnitude m's part of `total`, split evenly; the first magnitudes take the remainder."""
  return total // len(MAGNITUDES) + (m < total % len(MAGNITUDES))


def split_numbers(
  seed: int = 0,
  train_size: int = 20_000,
  validation_size: int = 1_000,
  test_size: int = 1_000,
  holdout: str = 'none',
) -> dict[str, list[int]]:
  """Disjoint sorted lists of numbers per split; every magnitude up to 999,999 is in train.

  With a `holdout` other than 'none', train, validation and test_iid avoid the numbers it holds
  out (`is_held_out`) and `test` is drawn from them: all those below 1,000 (none for
  'thousands', 50 for 'pairs'), the rest evenly over the magnitudes that hold such numbers.
  train_size counts 0..999 as 1,000 either way, so 'pairs' trains on 50 numbers fewer. Without a
  holdout the splits are those the results were measured on, draw for draw; 'thousands' too.
  """
  if holdout not in HOLDOUTS:
    raise ValueError(f'holdout must be one of {HOLDOUTS}, got {holdout!r}')
  if train_size < 1_000 + len(MAGNITUDES):
    raise ValueError(
      f'train_size must be at least {1_000 + len(MAGNITUDES)} (all of 0..999 plus each magnitude)'
    )
  rng = random.Random(seed)
  held = holdout != 'none'
  in_distribution = 'test_iid' if held else 'test'
  sizes = {'train': train_size - 1_000, 'validation': validation_size, in_distribution: test_size}
  out = {split: [] for split in sizes}
  out['train'] = [n for n in range(1_000) if not is_held_out(n, holdout)]
  for m, (lo, hi) in enumerate(MAGNITUDES):
    share = {split: _share(n, m) for split, n in sizes.items()}
    pool = (
      [n for n in range(lo, hi + 1) if not is_held_out(n, holdout)] if held else range(lo, hi + 1)
    )
    drawn = rng.sample(pool, sum(share.values()))  # without replacement: disjoint
    start = 0
    for split in sizes:
      out[split] += drawn[start : start + share[split]]
      start += share[split]
  if held:
    out['test'] = [n for n in range(1_000) if is_held_out(n, holdout)]
    rest = test_size - len(out['test'])
    novel = [[n for n in range(lo, hi + 1) if is_held_out(n, holdout)] for lo, hi in MAGNITUDES]
    novel = [numbers for numbers in novel if numbers]
    out['test'] += [
      n
      for m, numbers in enumerate(novel)
      for n in rng.sample(numbers, rest // len(novel) + (m < rest % len(novel)))
    ]
  return {split: sorted(numbers) for split, numbers in out.items()}


def number_pair(n: int, language: str) -> dict:
  """{'source': English words, 'target': words in `language`, 'number': n}."""
  return {'source': num2words(n, lang='en'), 'target': num2words(n, lang=language), 'number': n}
