"""Small stand-ins for the archives that the real TFDS builders download, in the real layout.

Each function writes one archive named as its URL's file and returns its path. The contents are
a few dozen made-up examples whose text says where they came from (split, label, corpus), so a
test can check that the real builder put each one where it belongs.
"""

import io
import os
import tarfile

COLOURS = ('red', 'green', 'blue', 'yellow', 'black', 'white')
GERMAN = {'red': 'rot', 'green': 'grün', 'blue': 'blau', 'yellow': 'gelb', 'black': 'schwarz'}
GERMAN['white'] = 'weiß'
THINGS = {'house': 'das Haus', 'car': 'das Auto', 'door': 'die Tür', 'book': 'das Buch'}


def _tar_gz(path: str, files: dict) -> str:
  """Writes {member path: text} as a .tar.gz (or .tgz) archive at `path`."""
  with tarfile.open(path, 'w:gz') as tar:
    for name, text in files.items():
      data = text.encode('utf-8')
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path


def imdb(directory: str, per_label: int = 12) -> str:
  """aclImdb_v1.tar.gz: aclImdb/{train,test}/{pos,neg}/ID_STARS.txt and aclImdb/train/unsup/."""
  files = {}
  words = {'pos': 'a wonderful, moving film', 'neg': 'a dull, tedious film'}
  for split in ('train', 'test'):
    for label, text in words.items():
      for i in range(per_label):
        colour = COLOURS[i % len(COLOURS)]
        files[f'aclImdb/{split}/{label}/{i}_{7 if label == "pos" else 2}.txt'] = (
          f'{split} review {i}: {text} about a {colour} house. <br /><br />{label} indeed.'
        )
  for i in range(4):
    files[f'aclImdb/train/unsup/{i}_0.txt'] = f'unlabelled review {i} of a film.'
  files['aclImdb/README'] = 'Large Movie Review Dataset v1.0 (a small stand-in)'
  return _tar_gz(os.path.join(directory, 'aclImdb_v1.tar.gz'), files)


def lm1b(directory: str) -> str:
  """The One Billion Words archive: training shards and held-out shards of one sentence a line."""
  top = '1-billion-word-language-modeling-benchmark-r13output'
  lines = [
    f'The {c} {t} is next to the {d} {u} .'
    for c in COLOURS
    for t in THINGS
    for d, u in (('old', 'tree'), ('new', 'road'))
  ]
  train, heldout = lines[:-8], lines[-8:]
  shards = {f'news.en-0000{k + 1}-of-00100': train[k::2] for k in range(2)}  # 20 lines each
  files = {
    f'{top}/training-monolingual.tokenized.shuffled/{shard}': '\n'.join(part) + '\n'
    for shard, part in shards.items()
  }
  files[f'{top}/heldout-monolingual.tokenized.shuffled/news.en.heldout-00000-of-00050'] = (
    '\n'.join(heldout) + '\n'
  )
  return _tar_gz(os.path.join(directory, f'{top}.tar.gz'), files)


def _pairs(corpus: str):
  """(German, English) sentence pairs, tagged with the corpus they belong to."""
  for colour in COLOURS:
    for thing, das in THINGS.items():
      yield f'{das} ist {GERMAN[colour]} ({corpus}).', f'the {thing} is {colour} ({corpus}).'


def _parallel(prefix: str, corpus: str) -> dict:
  de, en = zip(*_pairs(corpus), strict=True)
  return {f'{prefix}.de': '\n'.join(de), f'{prefix}.en': '\n'.join(en)}


def _sgm(sentences, lang: str) -> str:
  segs = '\n'.join(f'<seg id="{i + 1}">{s}</seg>' for i, s in enumerate(sentences))
  return f'<srcset setid="newstest2014" srclang="any">\n<doc docid="1" genre="news">\n{segs}\n'


def wmt14_de_en(directory: str) -> list[str]:
  """The four archives wmt14_translate/de-en reads: three training corpora and dev.tgz."""
  de, en = zip(*_pairs('newstest2014'), strict=True)
  dev = _parallel('dev/newstest2013', 'newstest2013') | {
    'dev/newstest2014-deen-src.de.sgm': _sgm(de, 'de'),
    'dev/newstest2014-deen-ref.en.sgm': _sgm(en, 'en'),
  }
  archives = {
    'training-parallel-europarl-v7.tgz': _parallel('training/europarl-v7.de-en', 'europarl'),
    'training-parallel-commoncrawl.tgz': _parallel('commoncrawl.de-en', 'commoncrawl'),
    'training-parallel-nc-v9.tgz': _parallel('training/news-commentary-v9.de-en', 'nc'),
    'dev.tgz': dev,
  }
  return [_tar_gz(os.path.join(directory, name), files) for name, files in archives.items()]
