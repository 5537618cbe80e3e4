"""The shipped Shakespeare corpus: the 42 works, the held-out plays, and genre passages.

`resources/shakespeare.jsonl.gz` is built by `scripts/build_shakespeare_corpus.py` (one record per
work: id, title, First Folio genre or None, text). This module only reads it; the TFDS builders in
`builders.py` turn it into splits.

Held-out plays: 8 plays (3 comedies, 2 histories, 3 tragedies) are *never* used for training,
neither for language modelling nor for genre classification, so the genre test set measures
generalisation to unseen plays rather than memorised character names or plots.
"""

import functools
import gzip
import json
import random
import re

import importlib_resources

GENRES = ('comedy', 'history', 'tragedy')

# Titles as they appear in the corpus (Project Gutenberg's titles).
HELD_OUT_TITLES = (
  'Twelfth Night',
  'Much Ado About Nothing',
  "A Midsummer Night's Dream",  # comedies
  'King Henry V',
  'King Richard II',  # histories
  'Hamlet',
  'Othello',
  'Julius Caesar',  # tragedies
)

PASSAGE_MIN_CHARS = 300
PASSAGE_MAX_CHARS = 700


@functools.lru_cache(maxsize=1)
def load_works() -> tuple[dict, ...]:
  """Returns the 42 works as dicts {id, title, genre (str | None), text}, sorted by id."""
  resource = importlib_resources.files('jaxformer.data') / 'resources' / 'shakespeare.jsonl.gz'
  with resource.open('rb') as raw, gzip.open(raw, 'rt', encoding='utf-8') as f:
    works = tuple(json.loads(line) for line in f)
  missing = set(HELD_OUT_TITLES) - {w['title'] for w in works}
  if len(works) != 42 or missing:
    raise RuntimeError(
      f'corrupt {resource}: {len(works)} works, missing {sorted(missing)}; '
      'rebuild it with scripts/build_shakespeare_corpus.py'
    )
  return works


def split_works() -> dict[str, list[dict]]:
  """{'train': 34 works (29 plays + 5 poems), 'validation': the 8 held-out plays}."""
  works = load_works()
  return {
    'train': [w for w in works if w['title'] not in HELD_OUT_TITLES],
    'validation': [w for w in works if w['title'] in HELD_OUT_TITLES],
  }


# ---------------------------------------------------------------------------------------------
# Speech extraction: the Gutenberg texts put each speaker's name on its own line ("HAMLET.",
# "Ber.", "1 Citizen.", "EGEUS"), stage directions in [brackets], and act/scene headings on their
# own lines. A genre classifier should learn from what characters say, not from who says it.
# ---------------------------------------------------------------------------------------------
_STAGE_DIRECTION = re.compile(r'[\[{][^\]}]*[\]}]', re.DOTALL)  # a few typos read "{Aside.]"
# Leftovers of nested or unbalanced brackets ("[Alarum. Enter...\n[and Soldiers, with] ladders.]").
_STRAY_CLOSE = re.compile(r'^[^\n\]}]*[\]}][ \t]*', re.MULTILINE)
_STRAY_OPEN = re.compile(r'[\[{][^\n]*$', re.MULTILINE)
_PLAY_START = re.compile(r'^\s*(ACT|Act|PROLOGUE|Prologue|INDUCTION|Induction)\b', re.MULTILINE)
_HEADING = re.compile(
  r'^\s*(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction)\b'
)
_SPEAKER = re.compile(r"^[0-9A-Z][A-Za-z0-9' ,&\-]*\.?$")  # a short name, maybe abbreviated
_INLINE_SPEAKER = re.compile(r"^[A-Z][A-Z' ]+\.\s+(?=\S)")  # "SPEED. You mistook, sir"
_EXIT = re.compile(r'^\s*(Exit|Exeunt|Enter|Re-enter)\b')


def speech_lines(text: str) -> list[str]:
  """The spoken lines of a play, in order: no speaker names, stage directions or headings."""
  start = _PLAY_START.search(text)
  if start is None:  # a poem: nothing is "spoken" by a character
    return []
  body = _STAGE_DIRECTION.sub('', text[start.start() :])
  body = _STRAY_OPEN.sub('', _STRAY_CLOSE.sub('', body))
  lines = []
  for block in re.split(r'\n\s*\n', body):
    block_lines = [l.strip() for l in block.split('\n') if l.strip()]
    if not block_lines:
      continue
    first = block_lines[0]
    if _HEADING.match(first):
      continue  # act/scene heading (plus its location line, if any)
    if (
      len(block_lines) >= 2
      and len(first) <= 30
      and _SPEAKER.match(first)
      and (first.endswith('.') or first.upper() == first)
    ):
      block_lines = block_lines[1:]
    block_lines[0] = _INLINE_SPEAKER.sub('', block_lines[0])
    lines.extend(l for l in block_lines if not _EXIT.match(l))
  return [l for l in lines if l]


def passages(text: str, seed: int) -> list[str]:
  """Cuts a play's speech into passages of 300-700 characters, on line boundaries.

  Target lengths are drawn uniformly in [300, 700] (seeded per play) so that passage length does
  not itself give the genre away; lines are joined with '\\n'.
  """
  rng = random.Random(seed)
  out, current, target = [], [], rng.randint(PASSAGE_MIN_CHARS, PASSAGE_MAX_CHARS)
  size = lambda ls: sum(len(l) for l in ls) + max(len(ls) - 1, 0)  # noqa: E731
  for line in speech_lines(text):
    if current and size(current + [line]) > PASSAGE_MAX_CHARS:
      if size(current) >= PASSAGE_MIN_CHARS:
        out.append('\n'.join(current))
      current, target = [], rng.randint(PASSAGE_MIN_CHARS, PASSAGE_MAX_CHARS)
    current.append(line)
    if size(current) >= target:
      out.append('\n'.join(current))
      current, target = [], rng.randint(PASSAGE_MIN_CHARS, PASSAGE_MAX_CHARS)
  return [p for p in out if PASSAGE_MIN_CHARS <= len(p) <= PASSAGE_MAX_CHARS]


def genre_splits(
  seed: int = 0,
  train_per_class: int = 100,
  validation_per_class: int = 50,
  test_per_class: int = 200,
) -> dict[str, list[dict]]:
  """The jaxformer_genre splits as lists of {'text', 'label' (index into GENRES), 'title'}.

  train and validation are disjoint samples from the training plays; train_full is every
  training-play passage *not* in validation (so validation stays unseen whichever train split
  is used); test samples only the held-out plays. Sampling is balanced per class and seeded.
  """
  splits = split_works()
  by_split = {}
  for split in ('train', 'validation'):
    pool = {g: [] for g in GENRES}
    for i, work in enumerate(splits[split]):
      if work['genre'] is None:
        continue
      for p in passages(work['text'], seed=seed * 1000 + i):
        pool[work['genre']].append(
          {'text': p, 'label': GENRES.index(work['genre']), 'title': work['title']}
        )
    by_split[split] = pool
  rng = random.Random(seed)
  out = {'train': [], 'validation': [], 'train_full': [], 'test': []}
  for genre in GENRES:
    pool = list(by_split['train'][genre])
    rng.shuffle(pool)
    need = train_per_class + validation_per_class
    if len(pool) < need or len(by_split['validation'][genre]) < test_per_class:
      raise RuntimeError(f'too few {genre} passages for the requested split sizes')
    out['validation'] += pool[:validation_per_class]
    out['train'] += pool[validation_per_class:need]
    out['train_full'] += pool[validation_per_class:]
    test_pool = list(by_split['validation'][genre])
    rng.shuffle(test_pool)
    out['test'] += test_pool[:test_per_class]
  return out
