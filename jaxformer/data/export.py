"""Write a shipped dataset's split as a file, in the format `dataset.name='files'` reads.

    python -m jaxformer.data.export jaxformer_genre train --output genre_train.csv
    python -m jaxformer.data.export jaxformer_numbers/en_de test --output numbers_test.tsv

The extension picks the format: .csv and .tsv get a header row (text,label or source,target),
.jsonl one object a line. Labels are written as their names, so training on the file gives the
same class ids (names sort the same way). Rows keep the split's order. The file is written
atomically: an interrupted export leaves no half-written file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile

from jaxformer.data import sources
from jaxformer.data.errors import DataError


def export_split(name: str, split: str, output: str, data_dir: str = '') -> int:
  """Writes split `split` of the shipped dataset `name` to `output`; returns the row count."""
  known = sources.KNOWN.get(name)
  if known is None or name.split('/')[0] not in sources.SHIPPED:
    shipped = [n for n in sources.KNOWN if n.split('/')[0] in sources.SHIPPED]
    raise DataError(f'unknown shipped dataset {name!r}; use one of {", ".join(shipped)}')
  ext = os.path.splitext(output)[1].lower()
  if ext not in ('.csv', '.tsv', '.jsonl'):
    raise DataError(f'--output {output!r}: use a .csv, .tsv or .jsonl file name')
  source = sources.open_source({'name': name, 'data_dir': data_dir}, known.task)
  source.check_split(split)
  columns = sources.EXAMPLE_FIELDS[known.task]
  rows = []
  for i in range(source.num_examples(split)):
    example = source.example(split, i)
    if known.task == 'classify':
      example['label'] = source.label_names[example['label']]
    row = [example[c] for c in columns]
    if ext == '.tsv' and any('\t' in v or '\n' in v for v in row):
      raise DataError(
        f'{name} {split} row {i} holds a tab or a newline: export it as .csv or .jsonl'
      )
    rows.append(row)
  _write_atomic(output, ext, columns, rows)
  return len(rows)


def _write_atomic(output: str, ext: str, columns: tuple, rows: list) -> None:
  directory = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(directory):
    raise DataError(f'--output {output!r}: directory {directory} does not exist')
  fd, tmp = tempfile.mkstemp(prefix='.tmp-export-', dir=directory)
  try:
    with os.fdopen(fd, 'w', newline='', encoding='utf-8') as f:
      if ext == '.jsonl':
        f.writelines(json.dumps(dict(zip(columns, r)), ensure_ascii=False) + '\n' for r in rows)
      else:
        quoting = csv.QUOTE_NONE if ext == '.tsv' else csv.QUOTE_MINIMAL
        writer = csv.writer(f, delimiter='\t' if ext == '.tsv' else ',', quoting=quoting)
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(tmp, output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m jaxformer.data.export', description=__doc__.splitlines()[0]
  )
  parser.add_argument('name', help='jaxformer_genre, jaxformer_numbers/en_de, ...')
  parser.add_argument('split', help='train, validation, test (genre also: train_full)')
  parser.add_argument('--output', required=True, help='the file to write (.csv, .tsv, .jsonl)')
  parser.add_argument('--data_dir', default='', help='where the datasets are prepared')
  args = parser.parse_args(argv)
  try:
    n = export_split(args.name, args.split, args.output, args.data_dir)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2
  print(f'wrote {n} rows to {args.output}', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
