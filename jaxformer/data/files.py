"""The user's own files as a dataset for every task: dataset.name='files' (older: 'text_files').

    classify   .csv / .tsv / .jsonl rows with a text and a label column (text_key, label_key)
    translate  .tsv / .csv with two columns (source, target; no header needed), or .jsonl /
               headed tables with source_key and target_key
    lm         .txt files (each one document), or .jsonl / .csv / .tsv rows (each one document)

Splits: `train_files`, `eval_files` and `test_files` are globs (several: comma-separated). A
split without files is carved from the training rows: `val_fraction` and `test_fraction` of them,
chosen with `split_seed`, stratified by label for classification (every class keeps at least one
row in each split). A .txt document gives its last lines instead, as 'text_files' always did.

Labels are strings; sorted, they become class ids 0..K-1 (numerically when all are integers).

`record` is everything needed to see the same rows again: the files' absolute paths and sha256,
the held-out row numbers and the label names. Training saves it in the run (data_split.json);
a resume or an evaluation passes it back, and a file that changed since is an error.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np

from jaxformer.data import readers
from jaxformer.data.errors import DataError
from jaxformer.data.inside import read_inside
from jaxformer.data.sources import EXAMPLE_FIELDS, Source, get

RECORD_VERSION = 1
_ROLES = (('train', 'train_files'), ('validation', 'eval_files'), ('test', 'test_files'))


def settings(dataset_cfg, task: str, legacy: bool = False) -> dict:
  """The dataset fields that decide which rows go where (compared on resume)."""
  train = get(dataset_cfg, 'train_files', '') or get(dataset_cfg, 'files', '')
  out = {
    'train_files': train,
    'eval_files': '' if legacy else get(dataset_cfg, 'eval_files', ''),
    'test_files': '' if legacy else get(dataset_cfg, 'test_files', ''),
    'val_fraction': float(get(dataset_cfg, 'val_fraction', 0.1)),
    'test_fraction': 0.0 if legacy else float(get(dataset_cfg, 'test_fraction', 0.0)),
    'split_seed': int(get(dataset_cfg, 'split_seed', 0)),
    'keys': {k: get(dataset_cfg, f'{k}_key', '') or k for k in EXAMPLE_FIELDS[task]},
  }
  if not train:
    field = 'dataset.files' if legacy else 'dataset.train_files'
    raise DataError(
      f'dataset {"text_files" if legacy else "files"!r} needs {field}, e.g. '
      + ("'data/*.txt'" if legacy else "'data/train.csv'")
    )
  for name in ('val_fraction', 'test_fraction'):
    if not 0.0 <= out[name] < 1.0:
      raise DataError(f'dataset.{name} must be in [0, 1), got {out[name]}')
  if out['val_fraction'] + out['test_fraction'] >= 1.0:
    raise DataError(
      'dataset.val_fraction + dataset.test_fraction must be < 1: nothing is left to train on'
    )
  return out


class FilesSource(Source):
  """Rows of the user's files, split and labelled as the module docstring says."""

  def __init__(self, dataset_cfg, task: str, record: dict | None = None, legacy: bool = False):
    self.name, self.task, self.legacy = ('text_files' if legacy else 'files'), task, legacy
    self.settings = settings(dataset_cfg, task, legacy)
    if record is not None:
      _check_record(record, self.settings, task)
    paths = {}
    for role, field in _ROLES:
      if record is not None:
        paths[role] = [f['path'] for f in record['files'][role]]
        _check_unchanged(record['files'][role])
      else:
        label = 'files' if legacy else field
        paths[role] = _expand(self.settings[field], label) if self.settings[field] else []
    keys = self.settings['keys']
    rows = {role: self._read(paths[role], keys) for role in paths}
    explicit = {role: bool(paths[role]) for role in ('validation', 'test')}
    fractions = {
      'validation': 0.0 if explicit['validation'] else self.settings['val_fraction'],
      'test': 0.0 if explicit['test'] else self.settings['test_fraction'],
    }
    if task == 'classify':
      names = _label_names(rows['train'], keys['label'], self.settings['train_files'])
      if record is not None and record['label_names'] != names:
        raise DataError(
          f'the labels of {self.settings["train_files"]} changed since the run started '
          f'({record["label_names"]} -> {names}); use a new --workdir'
        )
      self.label_names = tuple(names)
      for role in ('validation', 'test'):
        _check_known_labels(rows[role], names, keys['label'])
    rows_to_carve = [i for i, (p, _) in enumerate(rows['train']) if not self._is_document(p)]
    if record is not None:
      held = {role: list(record['held_out'][role]) for role in fractions}
      _check_held_out(held, rows_to_carve)
    else:
      held = _carve(rows['train'], rows_to_carve, fractions, self.settings, task)
    self.examples = self._split(rows, held, fractions)
    if not self.examples['validation'] and not legacy:
      raise DataError(
        f'dataset {self.name!r} has no validation rows: set dataset.eval_files or a '
        'dataset.val_fraction > 0 (training needs them for early stopping)'
      )
    self.splits = tuple(s for s in ('train', 'validation', 'test') if self.examples[s])
    self.record = {
      'version': RECORD_VERSION,
      'name': self.name,
      'task': task,
      'settings': self.settings,
      'files': {role: [_file_entry(p) for p in paths[role]] for role in paths},
      'held_out': held,
      'label_names': list(self.label_names),
      'num_examples': {s: len(self.examples[s]) for s in self.splits},
    }
    self._digest = hashlib.sha256(json.dumps(self.record, sort_keys=True).encode()).hexdigest()

  # ---- reading ------------------------------------------------------------------------------
  def _read(self, paths: list, keys: dict) -> list:
    """[(path, Row)] of every file in order; a .txt file is one row (an LM document)."""
    out = []
    for path in paths:
      if self.legacy:  # 'text_files' reads any file name as text, as it always did
        out.append((path, readers.Row({'text': readers.read_text(path)}, 1)))
        continue
      ext = readers.file_format(path)
      if ext == '.txt' and self.task != 'lm':
        raise DataError(f'{path}: a .txt file has no {self.task} fields; use .csv, .tsv or .jsonl')
      columns = {name: keys[name] for name in EXAMPLE_FIELDS[self.task]}
      default_pair = self.task == 'translate' and keys == {'source': 'source', 'target': 'target'}
      for row in readers.read_rows(path, columns, pair_default=default_pair):
        out.append((path, row))
    return out

  def _split(self, rows: dict, held: dict, fractions: dict) -> dict:
    """Normalised examples per split: explicit files, or the carved rows of the training files."""
    carved = {i: role for role in held for i in held[role]}
    examples = {'train': [], 'validation': [], 'test': []}
    for role in ('validation', 'test'):
      examples[role] += [self._example(row) for _, row in rows[role]]
    for i, (path, row) in enumerate(rows['train']):
      if self._is_document(path):  # a text document: its last lines are held out
        for role, text in _cut_lines(row.fields['text'], fractions).items():
          if text.strip():
            examples[role].append({'text': text})
      else:
        examples[carved.get(i, 'train')].append(self._example(row))
    if not examples['train']:
      raise DataError(
        f'dataset.train_files={self.settings["train_files"]!r}: the training part is empty'
      )
    return examples

  def _is_document(self, path: str) -> bool:
    return self.legacy or readers.file_format(path) == '.txt'

  def _example(self, row) -> dict:
    ex = dict(row.fields)
    if self.task == 'classify':
      ex['label'] = self.label_names.index(ex['label'])
    return ex

  # ---- Source -------------------------------------------------------------------------------
  def num_examples(self, split: str) -> int:
    self.check_split(split)
    return len(self.examples[split])

  def example(self, split: str, index: int) -> dict:
    return self.examples[split][index]

  def fingerprint(self, split: str) -> str:
    return f'files:{self._digest}:{split}'


def _expand(pattern: str, field: str) -> list:
  paths = []
  for part in (p.strip() for p in pattern.split(',')):
    matched = sorted(
      p for p in glob.glob(os.path.expanduser(part), recursive=True) if os.path.isfile(p)
    )
    if not matched:
      raise DataError(f'dataset.{field}={part!r} matches no files; check the path or glob')
    paths += [os.path.abspath(p) for p in matched]
  return paths


def _file_entry(path: str) -> dict:
  with open(path, 'rb') as f:
    return {'path': path, 'sha256': hashlib.file_digest(f, 'sha256').hexdigest()}


def _check_unchanged(entries: list) -> None:
  for entry in entries:
    if not os.path.isfile(entry['path']):
      raise DataError(
        f'{entry["path"]}: the run was trained on this file and it is gone; restore it'
      )
    if _file_entry(entry['path'])['sha256'] != entry['sha256']:
      raise DataError(
        f'{entry["path"]}: the file changed since the run started (sha256 differs); restore it '
        'or use a new --workdir'
      )


def _check_record(record: dict, now: dict, task: str) -> None:
  if record.get('version') != RECORD_VERSION or record.get('task') != task:
    raise DataError(
      "the run's data_split.json is from another version or task; use a new --workdir"
    )
  for field, value in now.items():
    if record['settings'].get(field) != value:
      raise DataError(
        f'dataset.{field} changed since the run started ({record["settings"].get(field)!r} -> '
        f'{value!r}); use a new --workdir or --config.overwrite=true'
      )


def _label_names(train_rows: list, key: str, pattern: str) -> list:
  names = sorted({row.fields['label'] for _, row in train_rows})
  if all(n.lstrip('-').isdigit() for n in names):
    names.sort(key=int)  # '2' before '10'
  if len(names) < 2:
    raise DataError(
      f'{pattern}: field {key!r} has {len(names)} class{"es" if len(names) != 1 else ""} '
      f'({", ".join(map(repr, names))}); classification needs at least 2'
    )
  return names


def _check_known_labels(rows: list, names: list, key: str) -> None:
  known = set(names)
  for path, row in rows:
    if row.fields['label'] not in known:
      raise DataError(
        f'{path}: line {row.line}: label {row.fields["label"]!r} in field {key!r} is not a '
        f'class of the training files ({", ".join(names)}); fix it or add it to the training data'
      )


def _carve(train_rows: list, carvable: list, fractions: dict, s: dict, task: str) -> dict:
  """Numbers of the `carvable` training rows held out for validation and test."""
  held = {'validation': [], 'test': []}
  carvable = np.array(carvable, dtype=np.int64)
  if not len(carvable) or not any(fractions.values()):
    return held
  rng = np.random.default_rng(s['split_seed'])
  if task == 'classify':
    labels = np.array([train_rows[i][1].fields['label'] for i in carvable])
    groups = [(c, carvable[labels == c]) for c in sorted(set(labels.tolist()))]
  else:
    groups = [(None, carvable)]
  for label, group in groups:
    order = group[rng.permutation(len(group))]
    counts = {r: (max(1, round(len(group) * f)) if f > 0 else 0) for r, f in fractions.items()}
    if sum(counts.values()) >= len(group):
      needed = sum(counts.values()) + 1
      what = f'class {label!r} (field {s["keys"]["label"]!r})' if label is not None else 'it'
      raise DataError(
        f'{s["train_files"]}: {what} has {len(group)} rows; a split with val_fraction='
        f'{fractions["validation"]} and test_fraction={fractions["test"]} needs at least '
        f'{needed}: add rows, lower the fractions or give dataset.eval_files/test_files'
      )
    held['validation'] += order[: counts['validation']].tolist()
    held['test'] += order[counts['validation'] : counts['validation'] + counts['test']].tolist()
  return {role: sorted(int(i) for i in rows) for role, rows in held.items()}


def _cut_lines(text: str, fractions: dict) -> dict:
  """A document's lines: [train | test | validation], the held-out parts at the end."""
  lines = text.splitlines(keepends=True)
  n_val = int(round(len(lines) * fractions['validation']))
  n_test = int(round(len(lines) * fractions['test']))
  a, b = len(lines) - n_val - n_test, len(lines) - n_val
  return {
    'train': ''.join(lines[:a]),
    'test': ''.join(lines[a:b]),
    'validation': ''.join(lines[b:]),
  }


# ---- what a run keeps of its data ------------------------------------------------------------
SPLIT_RECORD = 'data_split.json'  # a files source's record: which rows each split holds
LABELS = 'labels.json'  # classification: the class names, in class-id order


def load_split_record(workdir: str) -> dict | None:
  """The split record a run saved, or None (not a files run, or not started).

  Read as any file of a run or export is: a regular file inside it, else one DataError line.
  """
  record = _load_run_json(workdir, SPLIT_RECORD)
  if record is None:
    return None
  path = os.path.join(workdir, SPLIT_RECORD)
  try:
    _check_record_structure(record)
  except KeyError as e:
    raise DataError(
      f'{path} is malformed (no field {e}); restore it, or use a new --workdir'
    ) from None
  except (TypeError, ValueError) as e:
    raise DataError(f'{path} is malformed ({e}); restore it, or use a new --workdir') from None
  return record


def load_label_names(workdir: str) -> list | None:
  """A classification run's class names (labels.json), or None if it has none."""
  labels = _load_run_json(workdir, LABELS)
  if labels is None:
    return None
  names = labels.get('label_names') if isinstance(labels, dict) else None
  if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
    raise DataError(
      f"{os.path.join(workdir, LABELS)} has no list of strings 'label_names'; restore it"
    )
  return names


def _load_run_json(workdir: str, name: str):
  """The JSON of `workdir/name`, None if there is none; refuses a link out or a special file."""
  path = os.path.join(workdir, name)
  if not os.path.lexists(path):  # lexists: a dangling link is refused below, not ignored
    return None
  text = read_inside(workdir, name, 'the run or export')
  try:
    return json.loads(text)
  except (ValueError, UnicodeDecodeError):
    raise DataError(f'{path} is not valid JSON: restore it, or use a new --workdir') from None


def _check_record_structure(record) -> None:
  """Raises KeyError/TypeError/ValueError unless `record` has the fields FilesSource reads."""

  def need(value, kind, field):
    if not isinstance(value, kind) or isinstance(value, bool):
      raise TypeError(f'{field} is {type(value).__name__}, not {kind.__name__}')
    return value

  need(record, dict, 'the record')
  need(record['settings'], dict, 'settings')
  for role, _ in _ROLES:
    for i, entry in enumerate(need(record['files'][role], list, f'files.{role}')):
      need(need(entry, dict, f'files.{role}[{i}]')['path'], str, f'files.{role}[{i}].path')
      need(entry['sha256'], str, f'files.{role}[{i}].sha256')
  for role in ('validation', 'test'):
    for i, row in enumerate(need(record['held_out'][role], list, f'held_out.{role}')):
      if need(row, int, f'held_out.{role}[{i}]') < 0:
        raise ValueError(f'held_out.{role}[{i}] is negative')
  for i, name in enumerate(need(record['label_names'], list, 'label_names')):
    need(name, str, f'label_names[{i}]')


def _check_held_out(held: dict, carvable: list[int]) -> None:
  """A recorded split names each held-out row once, and only rows that can be held out (a row of
  a table file, not a .txt document): otherwise the resumed run would train on other data."""
  seen, allowed = {}, set(carvable)
  for role, indices in held.items():
    for i, row in enumerate(indices):
      where = f'{SPLIT_RECORD}: held_out.{role}[{i}] = {row}'
      if row not in allowed:
        raise DataError(
          f'{where} is not one of the {len(allowed)} table rows of the training files; '
          'restore it, or use a new --workdir'
        )
      if row in seen:
        raise DataError(f'{where} is also held_out.{seen[row]}; restore it, or use a new --workdir')
      seen[row] = f'{role}[{i}]'


def save_run_data_files(workdir: str, data) -> None:
  """Writes labels.json (classification) and data_split.json (a files source) into workdir."""
  if data.task == 'classify' and data.label_names:
    _write_json(os.path.join(workdir, LABELS), {'label_names': list(data.label_names)})
  record = getattr(data.source, 'record', None)
  if record is not None and not os.path.exists(os.path.join(workdir, SPLIT_RECORD)):
    _write_json(os.path.join(workdir, SPLIT_RECORD), record)


def _write_json(path: str, obj: dict) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      json.dump(obj, f, indent=1, sort_keys=True)
      f.write('\n')
    os.replace(tmp, path)  # all or nothing
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
