"""Reading the user's CSV, TSV, JSONL and plain-text files into rows of named string fields.

    rows = read_rows('data/train.csv', {'text': 'review', 'label': 'stars'})
    rows[0].fields == {'text': 'Great.', 'label': '5'}; rows[0].line == 2
    for row in iter_rows(path, columns): ...   # the same rows, read as they are taken

`columns` maps the names jaxformer uses (text, label, source, target) to the file's own column or
key names. CSV and TSV need a header row naming them, except a two-column file read with
`pair_default` (translation with default keys: source, then target). A .txt file is one document
(`txt_lines=False`) or one row per non-blank line, in the first field of `columns`.

Every problem is a DataError naming the file, the line and the field: a missing column or key, an
empty field, a row with a different number of fields, bytes that are not UTF-8 (with the byte
offset), an empty file, a header-less CSV when columns are named. Nothing is silently skipped or
replaced: a quietly dropped row would change the labels' balance and every number downstream.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import os
from collections.abc import Iterator

from jaxformer.data.errors import DataError

FORMATS = ('.csv', '.tsv', '.jsonl', '.txt')


@dataclasses.dataclass(frozen=True)
class Row:
  fields: dict  # jaxformer's name -> the field's text
  line: int  # 1-based line where the row starts (for error messages)


def file_format(path: str) -> str:
  """'.csv' | '.tsv' | '.jsonl' | '.txt' from the file name; anything else is an error."""
  ext = os.path.splitext(path)[1].lower()
  ext = '.jsonl' if ext in ('.jsonl', '.ndjson') else ext
  if ext not in FORMATS:
    raise DataError(f'{path}: unknown file type {ext!r}; use .csv, .tsv, .jsonl or .txt')
  return ext


def read_text(path: str) -> str:
  """The whole file as text (one document); errors as in iter_rows."""
  text = ''.join(line for _, line in _lines(path))
  if not text.strip():
    raise _empty(path)
  return text


def read_rows(
  path: str, columns: dict, *, txt_lines: bool = False, pair_default: bool = False
) -> list[Row]:
  """The rows of `path` with the fields named in `columns` (see the module docstring)."""
  return list(iter_rows(path, columns, txt_lines=txt_lines, pair_default=pair_default))


def iter_rows(
  path: str, columns: dict, *, txt_lines: bool = False, pair_default: bool = False
) -> Iterator[Row]:
  """read_rows one row at a time: the file is read as the rows are taken, so a file of any size
  needs the memory of one row (a problem surfaces when its line is reached)."""
  ext = file_format(path)
  if ext == '.txt' and not txt_lines:  # the text fills the one field asked for
    yield Row({next(iter(columns), 'text'): read_text(path)}, 1)
    return
  if ext == '.txt':
    rows = _txt_rows(path, columns)
  elif ext == '.jsonl':
    rows = _jsonl_rows(path, columns)
  else:
    rows = _table_rows(path, columns, '\t' if ext == '.tsv' else ',', pair_default)
  # A file of blank lines is empty (_table_rows tells a header without rows apart itself).
  first = next(rows, None)
  if first is None:
    raise _empty(path)
  yield first
  yield from rows


def _lines(path: str) -> Iterator[tuple[int, str]]:
  """(1-based line number, text with its newline) of each line, decoded one at a time;
  non-UTF-8 bytes are an error with their line and byte offset.

  A line ends at '\n', '\r\n' or a lone '\r' (old Mac files), as in Python's text mode; reading
  bytes keeps the offsets exact, and the file splits at '\n' only, so the rest is split here.
  """
  offset = 0
  with open(path, 'rb') as f:
    chunks = (line for chunk in f for line in chunk.splitlines(keepends=True))
    for number, data in enumerate(chunks, 1):
      try:
        text = data.decode('utf-8')
      except UnicodeDecodeError as e:
        raise DataError(
          f'{path}: line {number}: invalid UTF-8 at byte offset {offset + e.start}; convert the '
          'file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)'
        ) from None
      if number == 1 and text.startswith('\ufeff'):  # a byte-order mark (Excel writes one)
        text = text[1:]
      offset += len(data)
      yield number, text


def _empty(path: str) -> DataError:
  return DataError(f'{path}: the file is empty; give a file with rows')


def _txt_rows(path: str, columns: dict) -> Iterator[Row]:
  name = next(iter(columns), 'text')
  for number, line in _lines(path):
    text = line.rstrip('\r\n')
    if text.strip():
      yield Row({name: text}, number)


def _jsonl_rows(path: str, columns: dict) -> Iterator[Row]:
  for number, line in _lines(path):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(
        f'{path}: line {number}: not valid JSON ({e.msg}, column {e.colno})'
      ) from None
    if not isinstance(obj, dict):
      raise DataError(f'{path}: line {number}: expected a JSON object, got {type(obj).__name__}')
    fields = {}
    for name, key in columns.items():
      if key not in obj:
        raise DataError(
          f'{path}: line {number}: no key {key!r} (keys: {", ".join(map(str, obj))}); '
          f'set dataset.{name}_key'
        )
      value = obj[key]
      if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(
          f'{path}: line {number}: field {key!r} is a {type(value).__name__}; '
          'expected a string (or an integer label)'
        )
      fields[name] = _non_empty(path, number, key, str(value))
    yield Row(fields, number)


def _table_rows(path, columns, delimiter, pair_default) -> Iterator[Row]:
  records = _records(path, delimiter)
  header_line, header = next(records, (0, None))
  if header is None:
    return
  names = list(columns.values())
  if pair_default and len(header) == 2 and set(header) != set(names):
    positions = dict(zip(columns, range(2)))  # a header-less pair file: source, then target
    body, width = itertools.chain([(header_line, header)], records), 2
  else:
    positions = _positions(path, header_line, header, columns)
    body, width = records, len(header)
  count = 0
  for line, record in body:
    if len(record) != width:
      raise DataError(
        f'{path}: line {line}: {len(record)} fields, but the file has {width} columns; '
        + ('a field holds a tab' if delimiter == '\t' else 'quote fields that contain commas')
      )
    count += 1
    yield Row(
      {name: _non_empty(path, line, columns[name], record[pos]) for name, pos in positions.items()},
      line,
    )
  if not count:
    raise DataError(f'{path}: the file has a header but no rows; add rows below line 1')


def _records(path: str, delimiter: str) -> Iterator[tuple[int, list]]:
  """(first line, fields) of each CSV/TSV record that is not blank (a record may span lines)."""
  # TSV has no quoting convention: a quote character is just text there.
  quoting = csv.QUOTE_NONE if delimiter == '\t' else csv.QUOTE_MINIMAL
  reader = csv.reader((text for _, text in _lines(path)), delimiter=delimiter, quoting=quoting)
  end = 0
  try:
    for record in reader:
      start, end = end + 1, reader.line_num
      if record and any(field.strip() for field in record):
        yield start, record
  except csv.Error as e:
    raise DataError(f'{path}: line {reader.line_num}: {e}; check the quoting') from None


def _positions(path, line, header, columns) -> dict:
  present = [key for key in columns.values() if key in header]
  missing = [(name, key) for name, key in columns.items() if key not in header]
  if missing and not present:
    raise DataError(
      f'{path}: line {line} names no column {", ".join(repr(k) for _, k in missing)}: the file '
      f'seems to have no header row; add one (e.g. {",".join(columns.values())}) '
      'or set dataset.*_key to its column names'
    )
  if missing:
    name, key = missing[0]
    raise DataError(
      f'{path}: line {line}: no column {key!r} in the header (columns: {", ".join(header)}); '
      f'set dataset.{name}_key'
    )
  return {name: header.index(key) for name, key in columns.items()}


def _non_empty(path: str, line: int, key: str, value: str) -> str:
  if not value.strip():
    raise DataError(f'{path}: line {line}: field {key!r} is empty; fill it or remove the row')
  return value
