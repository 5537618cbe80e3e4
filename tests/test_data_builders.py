"""The shipped TFDS builders: offline preparation, split sizes, held-out plays, clean passages."""

import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer.data import numbers, shakespeare

HELD_OUT = set(shakespeare.HELD_OUT_TITLES)


def read(name, split, data_dir):
  source = tfds.data_source(
    name,
    split=split,
    data_dir=data_dir,
    download=False,
    builder_kwargs={'file_format': 'array_record'},
  )
  return [source[i] for i in range(len(source))]


def test_corpus_resource_has_42_works_with_folio_genres():
  works = shakespeare.load_works()
  assert len(works) == 42
  genres = [w['genre'] for w in works]
  assert (
    genres.count('comedy'),
    genres.count('history'),
    genres.count('tragedy'),
    genres.count(None),
  ) == (14, 10, 12, 6)
  assert {w['title'] for w in works if w['genre'] is None} >= {'Pericles', 'Sonnets'}
  assert 4_900_000 < sum(len(w['text']) for w in works) < 5_200_000


def test_shakespeare_splits_hold_out_eight_plays(data_dir):
  train = read('jaxformer_shakespeare', 'train', data_dir)
  validation = read('jaxformer_shakespeare', 'validation', data_dir)
  assert len(train) == 34 and len(validation) == 8
  assert {ex['title'].decode() for ex in validation} == HELD_OUT
  assert not HELD_OUT & {ex['title'].decode() for ex in train}
  train_text = '\n'.join(ex['text'].decode() for ex in train)
  assert 'To be, or not to be' not in train_text and 'To be, or not to be' in validation[0][
    'text'
  ].decode() + ''.join(ex['text'].decode() for ex in validation)


def test_genre_split_sizes_and_balance(data_dir):
  sizes = {'train': 100, 'validation': 50, 'test': 200}
  for split, per_class in sizes.items():
    labels = np.array([ex['label'] for ex in read('jaxformer_genre', split, data_dir)])
    assert np.bincount(labels, minlength=3).tolist() == [per_class] * 3, split
  assert len(read('jaxformer_genre', 'train_full', data_dir)) > 5000
  assert tfds.builder('jaxformer_genre', data_dir=data_dir).info.features['label'].names == [
    'comedy',
    'history',
    'tragedy',
  ]


def test_genre_no_held_out_text_in_any_train_split(data_dir):
  held_out_text = [w['text'] for w in shakespeare.split_works()['validation']]
  train_like = {
    s: read('jaxformer_genre', s, data_dir) for s in ('train', 'validation', 'train_full')
  }
  for split, examples in train_like.items():
    assert not HELD_OUT & {ex['title'].decode() for ex in examples}, split
  for ex in train_like['train_full'][::10] + train_like['train']:
    first_line = ex['text'].decode().split('\n')[0]
    assert len(first_line) < 25 or not any(first_line in t for t in held_out_text)
  test = read('jaxformer_genre', 'test', data_dir)
  assert {ex['title'].decode() for ex in test} <= HELD_OUT
  texts = [
    ex['text'].decode() for s in ('train', 'validation', 'train_full') for ex in train_like[s]
  ]
  assert not {ex['text'].decode() for ex in test} & set(texts)
  # validation is never part of either train split
  val = {ex['text'] for ex in train_like['validation']}
  assert not val & {ex['text'] for ex in train_like['train_full']}
  assert not val & {ex['text'] for ex in train_like['train']}


def test_genre_passages_are_clean_speech(data_dir):
  speaker = re.compile(r'^(HAMLET|OTHELLO|PROSPERO|FALSTAFF|Ber|Fran|Ham)\.$')
  for ex in read('jaxformer_genre', 'train_full', data_dir)[:2000]:
    text = ex['text'].decode()
    assert 300 <= len(text) <= 700
    assert '[' not in text and ']' not in text
    assert not any(speaker.match(line) for line in text.split('\n')), text
    assert not re.search(r'^(ACT|SCENE) [IVX]+', text, re.MULTILINE)


def test_speech_lines_strip_speakers_and_directions():
  play = (
    'ACT I.\n\nSCENE I. A room.\n\n[Enter HAMLET.]\n\n'
    'HAMLET.\nTo be, or not to be:\n[Aside.] that is the question.\n\n'
    "Ber.\nWho's there?\n\nSPEED. You mistook, sir.\n\n[Exeunt.]\n"
  )
  assert shakespeare.speech_lines(play) == [
    'To be, or not to be:',
    'that is the question.',
    "Who's there?",
    'You mistook, sir.',
  ]
  assert shakespeare.speech_lines('From fairest creatures we desire increase,\n') == []  # a poem


def test_numbers_splits(data_dir):
  splits = {
    s: read('jaxformer_numbers/en_de', s, data_dir) for s in ('train', 'validation', 'test')
  }
  assert [len(splits[s]) for s in ('train', 'validation', 'test')] == [20_000, 1_000, 1_000]
  nums = {s: {int(ex['number']) for ex in exs} for s, exs in splits.items()}
  assert not nums['train'] & nums['validation'] and not nums['train'] & nums['test']
  assert not nums['validation'] & nums['test']
  assert set(range(1000)) <= nums['train']
  for lo, hi in numbers.MAGNITUDES:
    for s in nums:
      assert any(lo <= n <= hi for n in nums[s]), (s, lo)
  by_number = {int(ex['number']): ex for ex in splits['train']}
  assert by_number[23]['source'].decode() == 'twenty-three'
  assert by_number[23]['target'].decode() == 'dreiundzwanzig'


def test_numbers_en_fr_config_is_registered():
  builder = tfds.builder('jaxformer_numbers/en_fr', data_dir='/nonexistent-never-written')
  assert builder.builder_config.language == 'fr'
  assert numbers.number_pair(80, 'fr') == {
    'source': 'eighty',
    'target': 'quatre-vingts',
    'number': 80,
  }
  with pytest.raises(ValueError):
    numbers.split_numbers(train_size=10)


def test_fresh_preparation_prints_one_line_and_no_download_wording(tmp_path):
  """A user reads TFDS's "Downloading and preparing" or its absl "Variant folder ... has no
  dataset_info.json" warning as a failed network access: a shipped dataset shows neither."""
  import os
  import subprocess
  import sys

  code = (
    'from jaxformer.data import sources\n'
    "source = sources.open_source({'name': 'jaxformer_shakespeare'}, 'lm')\n"
    "print('splits', *source.splits)\n"
  )
  env = dict(os.environ, JAXFORMER_DATA_DIR=str(tmp_path / 'fresh'))
  proc = subprocess.run(
    [sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  output = proc.stdout + proc.stderr
  assert 'Downloading' not in output and 'downloaded' not in output
  assert 'Variant folder' not in output and 'WARNING' not in output
  lines = [line for line in output.splitlines() if 'jaxformer_shakespeare' in line]
  assert len(lines) == 1 and re.fullmatch(
    r'preparing jaxformer_shakespeare \(offline, once\) \.\.\. \d+\.\d s', lines[0]
  ), output
  assert 'splits train validation' in proc.stdout


def test_a_run_that_loses_the_race_to_prepare_a_dataset_reads_the_winners(
  tmp_path, capsys, monkeypatch
):
  """Two runs started together both find the dataset unprepared. Here the second one starts
  preparing, and the first one's complete dataset lands in place before the second renames its
  own: the second must read the finished dataset, not fail with FileExistsError."""
  from jaxformer.data import offline, sources

  data_dir = str(tmp_path / 'data')
  make_builder = sources.tfds_builder
  loser = make_builder('jaxformer_genre', data_dir)
  generate = loser._download_and_prepare  # runs inside TFDS's temporary folder

  def finished_first_elsewhere(*args, **kwargs):
    offline.prepare_offline(make_builder('jaxformer_genre', data_dir), 'jaxformer_genre')
    return generate(*args, **kwargs)

  loser._download_and_prepare = finished_first_elsewhere
  builders = iter([loser])  # the run's first builder loses; any later one is fresh
  monkeypatch.setattr(sources, 'tfds_builder', lambda *a: next(builders, None) or make_builder(*a))
  source = sources.open_source({'name': 'jaxformer_genre', 'data_dir': data_dir}, 'classify')
  assert 'done by another process' in capsys.readouterr().out
  assert source.num_examples('test') == 600


def test_systematic_numbers_never_show_a_held_out_thousand_form_in_training():
  from num2words import num2words

  plain = numbers.split_numbers()
  splits = numbers.split_numbers(holdout='thousands')
  assert {s: len(v) for s, v in splits.items()} == {
    'train': 20_000,
    'validation': 1_000,
    'test_iid': 1_000,
    'test': 1_000,
  }
  held = set(numbers.HELD_OUT_THOUSANDS)
  assert len(held) == 50 and held <= set(range(1, 1_000))
  every = [n for v in splits.values() for n in v]
  assert len(every) == len(set(every))  # no number in two splits
  assert {n // 1_000 for n in splits['test']} <= held
  # The forms the test asks for ("dreiundzwanzigtausend", "twenty-three thousand") occur in no
  # training or validation pair, inside any number; the ending alone occurs (as units) often.
  seen = [numbers.number_pair(n, 'de') for n in splits['train'] + splits['validation']]
  for ending in numbers.HELD_OUT_ENDINGS:
    german, english = num2words(ending, lang='de'), num2words(ending, lang='en')
    assert not any(german + 'tausend' in p['target'] for p in seen), ending
    assert not any(english + ' thousand' in p['source'] for p in seen), ending
    assert sum(german in p['target'] for p in seen) > 100, ending
  for lo, hi in numbers.MAGNITUDES[1:]:  # 1,000-9,999 has no two-digit thousands part
    assert any(lo <= n <= hi for n in splits['test']), lo
  # The usual splits are untouched, and the systematic ones are the same on every call.
  assert numbers.split_numbers() == plain and 'test_iid' not in plain
  assert numbers.split_numbers(holdout='thousands') == splits
  builder = tfds.builder(
    'jaxformer_numbers/en_de_systematic', data_dir='/nonexistent-never-written'
  )
  assert builder.builder_config.holdout == 'thousands' and builder.builder_config.language == 'de'


def test_unseen_pairs_never_show_a_held_out_pair_anywhere_but_show_its_parts():
  from num2words import num2words

  splits = numbers.split_numbers(holdout='pairs')
  assert {s: len(v) for s, v in splits.items()} == {
    'train': 19_950,  # 0..999 less the 50 that end in a held-out pair
    'validation': 1_000,
    'test_iid': 1_000,
    'test': 1_000,
  }
  assert numbers.HELD_OUT_PAIRS == (24, 39, 48, 62, 86)  # results.md names them
  every = [n for v in splits.values() for n in v]
  assert len(every) == len(set(every))
  seen = [numbers.number_pair(n, 'de') for n in splits['train'] + splits['validation']]
  seen += [numbers.number_pair(n, 'de') for n in splits['test_iid']]
  novel = [numbers.number_pair(n, 'de') for n in splits['test']]
  for pair in numbers.HELD_OUT_PAIRS:
    german, english = num2words(pair, lang='de'), num2words(pair, lang='en')
    units, tens = num2words(pair % 10, lang='de'), num2words(pair // 10 * 10, lang='de')
    # The pair is never shown, as the last two digits or in the thousands part...
    assert not any(german in p['target'] or english in p['source'] for p in seen), pair
    assert sum(german in p['target'] for p in novel) >= 100, pair
    # ...but its units word before 'und' and its tens word after it are, with other partners.
    assert sum(f'{units}und' in p['target'] for p in seen) > 1_000, pair
    assert sum(f'und{tens}' in p['target'] for p in seen) > 1_000, pair
  # Every test number holds a pair, in each place it can be; the numbers below 1,000 are there.
  assert all(
    any(num2words(q, lang='en') in p['source'] for q in numbers.HELD_OUT_PAIRS) for p in novel
  )
  assert {n % 100 for n in splits['test'] if n // 1_000 % 100 not in numbers.HELD_OUT_PAIRS} == set(
    numbers.HELD_OUT_PAIRS
  )
  assert any(n % 100 not in numbers.HELD_OUT_PAIRS for n in splits['test'])  # thousands part only
  assert [n for n in splits['test'] if n < 1_000] == [
    n for n in range(1_000) if n % 100 in numbers.HELD_OUT_PAIRS
  ]
  assert numbers.split_numbers(holdout='pairs') == splits
  builder = tfds.builder(
    'jaxformer_numbers/en_fr_unseen_pairs', data_dir='/nonexistent-never-written'
  )
  assert builder.builder_config.holdout == 'pairs' and builder.builder_config.language == 'fr'
  with pytest.raises(ValueError, match='holdout must be one of'):
    numbers.split_numbers(holdout='tens')


def test_a_dataset_prepared_again_gets_new_cache_keys(data_dir, tmp_path):
  """Same name, version and sizes, other contents (a builder edited without a version bump):
  the tokenizer and encoded-split caches must not serve the old contents."""
  import os
  import shutil

  from jaxformer.data import sources

  copy = str(tmp_path / 'tfds')
  shutil.copytree(data_dir, copy)  # copy2: the same sizes and modification times
  cfg = {'name': 'jaxformer_numbers/en_de', 'data_dir': copy}
  before = sources.open_source(cfg, 'translate').fingerprint('test')
  assert sources.open_source(cfg, 'translate').fingerprint('test') == before  # stable
  prepared = os.path.join(copy, 'jaxformer_numbers', 'en_de', '1.0.0')
  data_file = next(f for f in sorted(os.listdir(prepared)) if 'array_record' in f)
  stat = os.stat(os.path.join(prepared, data_file))
  os.utime(os.path.join(prepared, data_file), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
  assert sources.open_source(cfg, 'translate').fingerprint('test') != before
