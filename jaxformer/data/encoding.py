"""Tokenising a whole split once into ragged int32 arrays, cached on disk.

Tokenising up front (like nanoGPT's train.bin) makes every later step random access: LM windows
are slices of one token stream, so shuffling, per-process sharding and resuming are just index
arithmetic, and over-length counts are known exactly before training starts.

Cache: <data_dir>/jaxformer_cache/encoded/<hash of split fingerprint + tokenizer + task>/, written
into a temp dir and renamed, so an interrupted run re-encodes instead of reading half a file.
Arrays are memory-mapped on load, so a large corpus does not have to fit in RAM.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from jaxformer.data.errors import DataError

_BATCH = 1024  # examples per encode_batch call
_VERSION = '1'


@dataclasses.dataclass
class Ragged:
  """Rows of different lengths: row i is values[offsets[i]:offsets[i+1]]."""

  values: np.ndarray  # int32[total]
  offsets: np.ndarray  # int64[rows + 1]

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, i: int) -> np.ndarray:
    return self.values[self.offsets[i] : self.offsets[i + 1]]

  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  @classmethod
  def from_rows(cls, rows: list) -> 'Ragged':
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(offsets[-1]))
    return cls(values, offsets)


@dataclasses.dataclass
class EncodedSplit:
  """A tokenised split. Which fields are set depends on the task.

  lm:        tokens = documents, each followed by EOS (so tokens.values is the LM stream)
  translate: sources, targets = token ids without specials
  classify:  tokens = text ids without specials; labels = int64[n]
  num_bytes: UTF-8 bytes of the predicted text (lm text, translate targets, classify texts).
  """

  num_examples: int
  num_bytes: int
  tokens: Ragged | None = None
  sources: Ragged | None = None
  targets: Ragged | None = None
  labels: np.ndarray | None = None


def encode_split(source, split: str, tokenizer, cache_dir: str = '') -> EncodedSplit:
  """Tokenises every example of `split`, or loads the cached result."""
  key = hashlib.sha256(
    json.dumps([_VERSION, source.fingerprint(split), tokenizer.fingerprint(), source.task]).encode()
  ).hexdigest()[:24]
  path = os.path.join(cache_dir, 'jaxformer_cache', 'encoded', key) if cache_dir else ''
  if path and os.path.exists(os.path.join(path, 'meta.json')):
    return _load(path)
  n = source.num_examples(split)
  if n == 0:
    raise DataError(f'split {split!r} of dataset {source.name!r} is empty; choose another split')
  fields = {'tokens': [], 'sources': [], 'targets': [], 'labels': []}
  num_bytes = 0
  for start in range(0, n, _BATCH):
    examples = [source.example(split, i) for i in range(start, min(start + _BATCH, n))]
    if source.task == 'translate':
      fields['sources'] += tokenizer.encode_batch([e['source'] for e in examples])
      fields['targets'] += tokenizer.encode_batch([e['target'] for e in examples])
      num_bytes += sum(len(e['target'].encode('utf-8')) for e in examples)
    else:
      ids = tokenizer.encode_batch([e['text'] for e in examples])
      if source.task == 'lm':
        ids = [row + [tokenizer.eos_id] for row in ids]
      else:
        fields['labels'] += [e['label'] for e in examples]
      fields['tokens'] += ids
      num_bytes += sum(len(e['text'].encode('utf-8')) for e in examples)
  encoded = EncodedSplit(
    num_examples=n,
    num_bytes=num_bytes,
    tokens=Ragged.from_rows(fields['tokens']) if source.task != 'translate' else None,
    sources=Ragged.from_rows(fields['sources']) if source.task == 'translate' else None,
    targets=Ragged.from_rows(fields['targets']) if source.task == 'translate' else None,
    labels=np.array(fields['labels'], dtype=np.int64) if source.task == 'classify' else None,
  )
  if source.task == 'lm' and len(encoded.tokens.values) <= n:  # nothing but EOS tokens
    raise DataError(f'split {split!r} of dataset {source.name!r} has no text; the corpus is empty')
  if source.task == 'classify':
    check_labels(encoded.labels, len(source.label_names), split, source)
  if path:
    _save(encoded, path)
  return encoded


def check_labels(labels: np.ndarray, num_classes: int, split: str, source) -> None:
  """Every label must be a class index in [0, num_classes)."""
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if len(bad):
    i = int(bad[0])
    raise DataError(
      f'label {int(labels[i])} of example {i} in split {split!r} of {source.name!r} is out of '
      f'range [0, {num_classes}) ({len(bad)} such examples); fix the labels or dataset.label_key'
    )


def _save(encoded: EncodedSplit, path: str) -> None:
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.tmp-', dir=parent)
  try:
    for name in ('tokens', 'sources', 'targets'):
      ragged = getattr(encoded, name)
      if ragged is not None:
        np.save(os.path.join(tmp, f'{name}.values.npy'), ragged.values)
        np.save(os.path.join(tmp, f'{name}.offsets.npy'), ragged.offsets)
    if encoded.labels is not None:
      np.save(os.path.join(tmp, 'labels.npy'), encoded.labels)
    # meta.json last: its presence marks a complete directory.
    with open(os.path.join(tmp, 'meta.json'), 'w') as f:
      json.dump({'num_examples': encoded.num_examples, 'num_bytes': encoded.num_bytes}, f)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, 'meta.json')):
      shutil.rmtree(path, ignore_errors=True)  # a damaged entry: replace it
    try:
      os.replace(tmp, path)
    except OSError:  # another process finished first; its copy is identical
      pass
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _load(path: str) -> EncodedSplit:
  with open(os.path.join(path, 'meta.json')) as f:
    meta = json.load(f)
  arrays = {}
  for name in ('tokens', 'sources', 'targets'):
    values = os.path.join(path, f'{name}.values.npy')
    if os.path.exists(values):
      arrays[name] = Ragged(
        np.load(values, mmap_mode='r'), np.load(os.path.join(path, f'{name}.offsets.npy'))
      )
  labels = os.path.join(path, 'labels.npy')
  if os.path.exists(labels):
    arrays['labels'] = np.load(labels)
  return EncodedSplit(num_examples=meta['num_examples'], num_bytes=meta['num_bytes'], **arrays)
