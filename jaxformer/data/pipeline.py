"""The training loop's entry point: build_task_data(dataset_cfg, ...) -> TaskData.

One pipeline per task, all on grain, all with fixed shapes (nothing recompiles):

  lm         the train split's documents, tokenised and joined with EOS into one stream, cut into
             windows of max_len+1 tokens starting every max_len tokens (window i predicts tokens
             i*max_len+1 .. (i+1)*max_len, so in evaluation every token is a target exactly once).
             inputs = window[:-1], targets = window[1:]                      [B, max_len]
             With dataset.shift_windows, each epoch's train windows start at a seeded offset in
             0..max_len-1: a token is seen after a different context in each pass over the data.
  translate  inputs = source + EOS, decoder_inputs = BOS + target, targets = target + EOS, each
             cut to max_len and padded; over-length examples are truncated and counted.
  classify   inputs = text + EOS cut to max_len and padded; targets = label   [B, max_len], [B]

Train: indices -> shuffle(seed) -> repeat (reshuffled every epoch) -> global batches
(drop_remainder) -> this process's contiguous rows of each. The grain iterator's state is
{'next_index': k}: JSON-able, and restoring it replays exactly the remaining batches, for any
process count.

Eval: each global batch b holds rows b*B .. b*B+B-1 of the split, and process p gets its
contiguous B/P rows of it; rows past the end are padding with weight 0, so every example is
counted exactly once and every process runs the same number of steps.
"""

import dataclasses
import logging
import math

import grain
import numpy as np

from jaxformer.data import encoding, packing, sources
from jaxformer.data.errors import DataError
from jaxformer.data.tokenizers import ByteTokenizer, train_sentencepiece

log = logging.getLogger(__name__)


def build_task_data(
  dataset_cfg,
  *,
  task: str,
  max_len: int,
  batch_size: int,
  seed: int,
  tokenizer=None,
  workdir_tokenizer_dir: str | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  split_record: dict | None = None,
) -> 'TaskData':
  """Opens the dataset, gets a tokenizer, and returns the task's pipelines.

  dataset_cfg keys (dict or ConfigDict; missing/None = default): name, data_dir, train_split,
  eval_split, test_split, tokenizer, vocab_size, text_key, source_key, target_key, label_key,
  files, val_fraction, examples_per_class, pack, shift_windows, download, and for name='files'
  train_files, eval_files, test_files, test_fraction, split_seed (see jaxformer/data/files.py).
  batch_size is global. split_record: a files source's saved record (a resume or an evaluation
  sees its rows).
  """
  if int(max_len) < 2:
    raise DataError(f'max_len must be >= 2 (an input and a target token), got {max_len}')
  if process_index is None or process_count is None:
    import jax  # only when the caller does not say: keeps this module usable without devices

    process_index, process_count = jax.process_index(), jax.process_count()
  if batch_size < 1 or batch_size % process_count:
    raise DataError(
      f'batch_size {batch_size} must be a positive multiple of the process count {process_count}'
    )
  source = sources.open_source(dataset_cfg, task, split_record)
  splits = sources.split_names(dataset_cfg, source)
  cache_dir = sources.default_data_dir(sources.get(dataset_cfg, 'data_dir', ''))
  if tokenizer is None:
    tokenizer = _make_tokenizer(dataset_cfg, source, splits['train'], cache_dir)
    if workdir_tokenizer_dir:
      tokenizer.save(workdir_tokenizer_dir)
  return TaskData(
    source=source,
    splits=splits,
    tokenizer=tokenizer,
    task=task,
    max_len=int(max_len),
    batch_size=int(batch_size),
    seed=int(seed),
    process_index=int(process_index),
    process_count=int(process_count),
    cache_dir=cache_dir,
    examples_per_class=int(sources.get(dataset_cfg, 'examples_per_class', 0)),
    pack=bool(sources.get(dataset_cfg, 'pack', False)),
    shift_windows=bool(sources.get(dataset_cfg, 'shift_windows', False)),
  )


def _default_vocab_size() -> int:
  """The base config's dataset.vocab_size (configs/default.py), for configs that leave it 0."""
  from jaxformer.configs import default  # the base training config; imported when needed

  return int(default.get_dataset_config().vocab_size)


def _make_tokenizer(dataset_cfg, source, train_split, cache_dir):
  known = sources.KNOWN.get(source.name, sources.Known(source.task))
  kind = sources.get(dataset_cfg, 'tokenizer', '') or known.tokenizer
  if kind == 'byte':
    return ByteTokenizer()
  if kind != 'sentencepiece':
    raise DataError(f"unknown tokenizer {kind!r}; use 'sentencepiece' or 'byte'")
  n = source.num_examples(train_split)
  if n == 0:
    raise DataError(
      f'split {train_split!r} of {source.name!r} is empty; nothing to train a tokenizer on'
    )

  def texts():  # the train split only, so evaluation text never shapes the vocabulary
    for i in range(n):
      ex = source.example(train_split, i)
      yield from ([ex['source'], ex['target']] if source.task == 'translate' else [ex['text']])

  return train_sentencepiece(
    texts(),
    int(sources.get(dataset_cfg, 'vocab_size', 0) or _default_vocab_size()),
    cache_dir=f'{cache_dir}/jaxformer_cache/tokenizers',
    corpus_fingerprint=source.fingerprint(train_split),
  )


@dataclasses.dataclass
class TaskData:
  """A task's data: tokenizer, train iterator, eval batches, raw examples. See module docstring."""

  source: sources.Source
  splits: dict
  tokenizer: object
  task: str
  max_len: int
  batch_size: int
  seed: int
  process_index: int
  process_count: int
  cache_dir: str
  examples_per_class: int = 0
  pack: bool = False  # translate, lm: train rows hold several examples (see packed_row)
  shift_windows: bool = False  # lm: each epoch's train windows start at a new offset

  def __post_init__(self):
    if self.pack and self.task == 'classify':
      raise DataError("dataset.pack is for 'translate' and 'lm' (a label per row); set it False")
    if self.shift_windows and (self.task != 'lm' or self.pack):
      raise DataError(
        "dataset.shift_windows moves the windows of an unpacked 'lm' stream; set it False, "
        'or dataset.pack False'
      )
    self._encoded = {}
    self._token_bytes = None  # UTF-8 bytes per token id, built on first use
    self.truncated = {}  # split -> number of over-length examples that were truncated
    self.per_process_batch_size = self.batch_size // self.process_count

  # ---- metadata ----------------------------------------------------------------------------
  @property
  def label_names(self) -> tuple:
    return tuple(self.source.label_names)

  @property
  def num_classes(self) -> int:
    return len(self.source.label_names)

  def encoded(self, split: str) -> encoding.EncodedSplit:
    """The tokenised split (cached in memory and on disk)."""
    if split not in self._encoded:
      self.source.check_split(split)
      enc = encoding.encode_split(self.source, split, self.tokenizer, self.cache_dir)
      if self.task == 'classify':
        encoding.check_labels(enc.labels, self.num_classes, split, self.source)
      self._encoded[split] = enc
      self.truncated[split] = self._count_truncated(enc)
      if self.truncated[split]:
        log.warning(
          '%s/%s: %d of %d examples are longer than max_len=%d and were truncated',
          self.source.name,
          split,
          self.truncated[split],
          enc.num_examples,
          self.max_len,
        )
    return self._encoded[split]

  def _count_truncated(self, enc) -> int:
    if self.task == 'translate':  # +1 for EOS on each side
      return int(
        np.sum(
          (enc.sources.lengths() + 1 > self.max_len) | (enc.targets.lengths() + 1 > self.max_len)
        )
      )
    if self.task == 'classify':
      return int(np.sum(enc.tokens.lengths() + 1 > self.max_len))
    return 0  # LM windows cut the stream; nothing is lost

  def num_rows(self, split: str, train: bool = False) -> int:
    """Examples (translate, classify) or windows (lm) in a split; train LM counts full windows
    only (with shift_windows, those that stay whole at any offset)."""
    enc = self.encoded(split)
    if self.task == 'lm':
      n_targets = len(enc.tokens.values) - 1
      if not train:
        return math.ceil(n_targets / self.max_len)
      return (n_targets - (self.max_len - 1 if self.shift_windows else 0)) // self.max_len
    return enc.num_examples

  def scored_bytes(self, split: str, num_rows: int | None = None) -> int:
    """UTF-8 bytes of the targets in the first `num_rows` rows of `split` (default: all rows).

    These are exactly the bytes that evaluating those rows scores (EOS counts 0), so
    bits/byte = metrics.bits_per_byte(loss_sum over those rows, scored_bytes(split, rows)).
    """
    if self.task == 'classify':
      raise ValueError('classification targets are labels, not text: there are no bytes to score')
    enc, L = self.encoded(split), self.max_len
    rows = self.num_rows(split) if num_rows is None else min(int(num_rows), self.num_rows(split))
    if self._token_bytes is None:
      self._token_bytes = self.tokenizer.token_bytes()
    sizes = self._token_bytes
    if self.task == 'lm':  # window i scores stream tokens i*L+1 .. (i+1)*L
      n_targets = min(rows * L, len(enc.tokens.values) - 1)
      return int(np.sum(sizes[np.asarray(enc.tokens.values[1 : n_targets + 1])]))
    return int(sum(np.sum(sizes[enc.targets[i][:L]]) for i in range(rows)))

  # ---- rows ----------------------------------------------------------------------------------
  def _row(self, split: str, i: int, offset: int = 0) -> dict:
    """One example as fixed-shape arrays (see module docstring); `offset` shifts LM windows."""
    enc, L = self.encoded(split), self.max_len
    if self.task == 'lm':
      start = offset + i * L
      window = np.asarray(enc.tokens.values[start : start + L + 1], dtype=np.int32)
      n = len(window) - 1  # < L only for the last window of an eval split
      inputs, targets = np.zeros(L, np.int32), np.zeros(L, np.int32)
      inputs[:n], targets[:n] = window[:-1], window[1:]
      return {
        'inputs': inputs,
        'targets': targets,
        'weights': (np.arange(L) < n).astype(np.float32),
      }
    if self.task == 'translate':
      tok = self.tokenizer
      src = _pad(np.append(enc.sources[i], tok.eos_id)[:L], L)
      seq = np.append(enc.targets[i], tok.eos_id)[:L]
      dec = _pad(np.concatenate([[tok.bos_id], seq[:-1]]), L)
      return {
        'inputs': src,
        'decoder_inputs': dec,
        'targets': _pad(seq, L),
        'weights': (np.arange(L) < len(seq)).astype(np.float32),
      }
    ids = np.append(
      enc.tokens[i][: L - 1], self.tokenizer.eos_id
    )  # EOS: a fixed token for 'last' pooling
    return {'inputs': _pad(ids, L), 'targets': np.int32(enc.labels[i]), 'weights': np.float32(1.0)}

  def _pad_row(self) -> dict:
    row = self._row_shapes()
    return {k: np.zeros(shape, dtype) for k, (shape, dtype) in row.items()}

  def _row_shapes(self) -> dict:
    L = self.max_len
    if self.task == 'lm':
      return {
        'inputs': ((L,), np.int32),
        'targets': ((L,), np.int32),
        'weights': ((L,), np.float32),
      }
    if self.task == 'translate':
      return {k: ((L,), np.int32) for k in ('inputs', 'decoder_inputs', 'targets')} | {
        'weights': ((L,), np.float32)
      }
    return {'inputs': ((L,), np.int32), 'targets': ((), np.int32), 'weights': ((), np.float32)}

  # ---- train -------------------------------------------------------------------------------
  # ---- packing ------------------------------------------------------------------------------
  def packed_bins(self) -> list:
    """Train examples grouped into rows: in a seeded order, each row takes examples while they
    still fit in max_len (translate: source and target with EOS; lm: a document chunk's
    inputs). The grouping is fixed for the run, so grain shuffles rows, and a resume replays
    the same ones."""
    enc, L = self.encoded(self.splits['train']), self.max_len
    if self.task == 'lm':
      sizes = np.array([[n - 1] for _, _, n in self.lm_chunks()])
    else:
      sizes = np.stack([enc.sources.lengths() + 1, enc.targets.lengths() + 1], 1)
    return packing.next_fit(np.minimum(sizes, L), L, np.random.default_rng(self.seed))

  def lm_chunks(self) -> list:
    """(document, start, tokens) pieces of the train documents, each [EOS] + document cut into
    windows of <= max_len+1 tokens that overlap by one (as the unpacked LM windows do)."""
    if not hasattr(self, '_lm_chunks'):
      docs = self.encoded(self.splits['train']).tokens
      self._lm_chunks = packing.chunks(docs.lengths() + 1, self.max_len + 1)
    return self._lm_chunks

  def packed_row(self, examples: list) -> dict:
    """Examples' rows (see _row) laid one after another, with example ids ('*_segmentation',
    1, 2, ..., 0 = padding) and positions restarting at 0 in each ('*_position')."""
    L, split = self.max_len, self.splits['train']
    if self.task == 'lm':
      docs, chunks = self.encoded(split).tokens, self.lm_chunks()
      pieces = []
      for i in examples:
        doc, start, n = chunks[i]
        tokens = np.concatenate([[self.tokenizer.eos_id], docs[doc]])[start : start + n]
        pieces.append({'inputs': tokens[:-1], 'targets': tokens[1:]})
      return packing.lay_out(pieces, L)
    out = {k: np.zeros(L, np.int32) for k in ('inputs', 'decoder_inputs', 'targets')}
    out |= {f'{side}_{k}': np.zeros(L, np.int32) for side in ('inputs', 'targets')
            for k in ('segmentation', 'position')}  # fmt: skip
    out['weights'] = np.zeros(L, np.float32)
    at = {'inputs': 0, 'targets': 0}
    for seg, i in enumerate(examples, 1):
      row = self._row(split, i)
      for side, keys in (('inputs', ('inputs',)), ('targets', ('decoder_inputs', 'targets'))):
        n = (
          int(np.count_nonzero(row['weights']))
          if side == 'targets'
          else int(np.count_nonzero(row['inputs']))
        )
        a = at[side]
        for k in keys:
          out[k][a : a + n] = row[k][:n]
        if side == 'targets':
          out['weights'][a : a + n] = row['weights'][:n]
        out[f'{side}_segmentation'][a : a + n] = seg
        out[f'{side}_position'][a : a + n] = np.arange(n)
        at[side] = a + n
    return out

  def train_indices(self) -> np.ndarray:
    """All train rows (LM windows, examples or packed rows) before sharding; classify may
    subsample per class."""
    split = self.splits['train']
    if self.pack:
      return np.arange(len(self.packed_bins()))
    n = self.num_rows(split, train=True)
    if self.task != 'classify' or self.examples_per_class <= 0:
      return np.arange(n)
    labels = self.encoded(split).labels
    rng = np.random.default_rng(self.seed)
    keep = [
      rng.permutation(np.flatnonzero(labels == c))[: self.examples_per_class]
      for c in range(self.num_classes)
    ]
    return np.sort(np.concatenate(keep))

  def train_dataset(self) -> grain.MapDataset:
    """This process's infinite, shuffled MapDataset of train batches.

    The order is global: shuffle all rows, cut global batches, then each process keeps its
    contiguous slice. So the global batch at step k is the same for any number of processes
    (multi-host losses equal single-host ones), and an iterator state saved with one process
    count resumes correctly with another.
    """
    split = self.splits['train']
    indices = self.train_indices()
    if len(indices) < self.batch_size:
      what = f'windows of max_len+1={self.max_len + 1} tokens' if self.task == 'lm' else 'examples'
      raise DataError(
        f'the train split {split!r} of {self.source.name!r} has only {len(indices)} {what}, '
        f'fewer than one batch of {self.batch_size}; use more data, a smaller batch_size '
        'or a smaller max_len'
      )
    lo = self.process_index * self.per_process_batch_size
    hi = lo + self.per_process_batch_size

    bins = self.packed_bins() if self.pack else None
    n = len(indices)

    def rows(global_batch):
      if bins is not None:
        rows = [self.packed_row(bins[int(i)]) for i in global_batch[lo:hi]]
      elif self.shift_windows:  # entries are epoch * n + window (see below)
        rows = [
          self._row(split, int(v) % n, self.window_offset(int(v) // n)) for v in global_batch[lo:hi]
        ]
      else:
        rows = [self._row(split, int(i)) for i in global_batch[lo:hi]]
      return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    ds = grain.MapDataset.source(indices).shuffle(seed=self.seed).repeat()  # reshuffled per epoch
    if self.shift_windows:  # the k-th row overall is in epoch k // n; the row keeps that number
      ds = ds.map_with_index(lambda k, i: int(i) + (k // n) * n)
    return ds.batch(self.batch_size, drop_remainder=True).map(rows)

  def window_offset(self, epoch: int) -> int:
    """Where epoch `epoch`'s LM train windows start (shift_windows): a function of the seed and
    the epoch only, so a resume, or any process count, cuts the same windows."""
    return int(np.random.default_rng((self.seed, epoch)).integers(self.max_len))

  def train_iterator(self) -> grain.DatasetIterator:
    """Infinite iterator of per-process batches; get_state()/set_state() to checkpoint/resume."""
    options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
    return iter(self.train_dataset().to_iter_dataset(options))

  @property
  def steps_per_epoch(self) -> int:
    return max(1, len(self.train_indices()) // self.batch_size)

  # ---- eval ----------------------------------------------------------------------------------
  def eval_batches(self, split: str, batch_size: int | None = None) -> 'EvalBatches':
    """Per-process batches covering every row of `split` exactly once (padding has weight 0)."""
    batch_size = int(batch_size or self.batch_size)
    if batch_size % self.process_count:
      raise DataError(
        f'eval batch_size {batch_size} must be a multiple of the process count {self.process_count}'
      )
    self.source.check_split(split)
    return EvalBatches(self, split, batch_size)

  def examples(self, split: str, limit: int | None = None) -> list[dict]:
    """Raw examples for reports: lm {'text'}, translate {'source', 'target'},
    classify {'text', 'label'}."""
    n = self.source.num_examples(split)
    return [self.source.example(split, i) for i in range(n if limit is None else min(limit, n))]


class EvalBatches:
  """A re-iterable, fixed-length sequence of one process's eval batches."""

  def __init__(self, data: TaskData, split: str, batch_size: int):
    self.data, self.split, self.batch_size = data, split, batch_size
    self.num_rows = data.num_rows(split)
    self.per_process = batch_size // data.process_count

  def __len__(self) -> int:
    return math.ceil(self.num_rows / self.batch_size)

  def __iter__(self):
    d = self.data
    for b in range(len(self)):
      start = b * self.batch_size + d.process_index * self.per_process
      rows = [
        d._row(self.split, i) if i < self.num_rows else d._pad_row()
        for i in range(start, start + self.per_process)
      ]
      yield {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _pad(ids, length: int) -> np.ndarray:
  out = np.zeros(length, np.int32)
  out[: len(ids)] = ids
  return out
