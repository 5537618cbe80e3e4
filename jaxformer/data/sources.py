"""Where examples come from: the shipped TFDS builders, real TFDS datasets, or the user's files.

Every source hands out *normalised* examples, whatever the dataset's own feature names are:
  lm        {'text': str}
  translate {'source': str, 'target': str}
  classify  {'text': str, 'label': int}
so the pipelines downstream never see dataset-specific keys. Feature keys come from dataset_cfg
(text_key, source_key, target_key, label_key), with defaults for the datasets in KNOWN.

Reads go through `tfds.data_source` (ArrayRecord, random access), so TensorFlow is never needed.
"""

import abc
import contextlib
import dataclasses
import hashlib
import importlib
import json
import logging
import os

from jaxformer.config import TASKS
from jaxformer.data import offline
from jaxformer.data.errors import DataError

log = logging.getLogger(__name__)

# The fields of a normalised example of each task (see above), in the order a file's columns have.
EXAMPLE_FIELDS = {
  'lm': ('text',),
  'translate': ('source', 'target'),
  'classify': ('text', 'label'),
}


@dataclasses.dataclass(frozen=True)
class Known:
  """Defaults for a dataset we know: its task, feature keys and split names ('' = none)."""

  task: str
  text_key: str = 'text'
  source_key: str = 'source'
  target_key: str = 'target'
  label_key: str = 'label'
  train_split: str = 'train'
  eval_split: str = 'validation'
  test_split: str = 'test'
  tokenizer: str = 'sentencepiece'
  module: str = ''  # tfds module to import first when the builder is not registered by default


KNOWN = {
  'jaxformer_shakespeare': Known('lm', test_split=''),
  'jaxformer_genre': Known('classify'),
  'jaxformer_numbers/en_de': Known('translate', tokenizer='byte'),
  'jaxformer_numbers/en_fr': Known('translate', tokenizer='byte'),
  'jaxformer_numbers/en_de_systematic': Known('translate', tokenizer='byte'),
  'jaxformer_numbers/en_fr_systematic': Known('translate', tokenizer='byte'),
  'jaxformer_numbers/en_de_unseen_pairs': Known('translate', tokenizer='byte'),
  'jaxformer_numbers/en_fr_unseen_pairs': Known('translate', tokenizer='byte'),
  'text_files': Known('lm', test_split=''),
  'lm1b': Known('lm', eval_split='test', test_split=''),
  'tiny_shakespeare': Known('lm'),
  'wmt14_translate/de-en': Known(
    'translate', source_key='en', target_key='de', module='tensorflow_datasets.translate.wmt14'
  ),
  'imdb_reviews': Known('classify', eval_split='test', test_split=''),
  # GLUE test labels are hidden (-1), so there is no usable test split.
  'glue/sst2': Known(
    'classify', text_key='sentence', test_split='', module='tensorflow_datasets.text.glue'
  ),
}
SHIPPED = ('jaxformer_shakespeare', 'jaxformer_genre', 'jaxformer_numbers')


def default_data_dir(value: str = '') -> str:
  """dataset_cfg.data_dir, else $JAXFORMER_DATA_DIR, else ~/.cache/jaxformer/tfds
  (never ~/tensorflow_datasets)."""
  path = (
    value
    or os.environ.get('JAXFORMER_DATA_DIR')
    or os.path.join('~', '.cache', 'jaxformer', 'tfds')
  )
  return os.path.abspath(os.path.expanduser(path))


def get(cfg, key, default=None):
  """Reads a key from a dict or ml_collections.ConfigDict; missing or None means `default`."""
  value = cfg.get(key, None) if hasattr(cfg, 'get') else getattr(cfg, key, None)
  return default if value is None else value


class Source(abc.ABC):
  """A dataset's splits as random-access sequences of normalised examples."""

  name: str
  task: str
  splits: tuple
  label_names: tuple = ()

  @abc.abstractmethod
  def num_examples(self, split: str) -> int:
    """Number of examples in `split`."""

  @abc.abstractmethod
  def example(self, split: str, index: int) -> dict:
    """The normalised example at `index` of `split`."""

  @abc.abstractmethod
  def fingerprint(self, split: str) -> str:
    """A string that changes whenever the split's contents could change (for caches)."""

  def check_split(self, split: str) -> None:
    if split not in self.splits:
      raise DataError(
        f'dataset {self.name!r} has no split {split!r}; available splits: {", ".join(self.splits)}'
      )


class TfdsSource(Source):
  """A TFDS dataset read through tfds.data_source, with its feature keys mapped."""

  def __init__(self, name, task, keys, data_dir, download):
    self.name, self.task, self.keys = name, task, keys
    builder = tfds_builder(name, data_dir)
    if not is_prepared(builder) and not _answers_without_files(builder):
      from jaxformer.data import prepare  # here: prepare imports this module

      if name.split('/')[0] in SHIPPED:
        offline.prepare_offline(builder, name)  # generated from package files: offline, seconds
      elif download:
        prepare.prepare(name, data_dir)  # one-line DataError without TensorFlow or network
        builder = tfds_builder(name, data_dir)  # re-reads the info (splits) just written
      else:
        # Checked up front: TFDS's own download retries take ~200 s to fail offline.
        also = ', or set dataset.download=True' if prepare.tensorflow_installed() else ''
        raise DataError(
          f'dataset {name!r} is not prepared in {data_dir}; prepare it once (needs internet): '
          f'`{prepare.how_to_prepare(name, data_dir)}`{also}'
        )
    self.info = builder.info
    self.splits = tuple(self.info.splits.keys())
    features = self.info.features
    for key in keys.values():
      if key not in features:
        raise DataError(
          f'dataset {name!r} has no feature {key!r}; its features are '
          f'{", ".join(features.keys())}: set dataset.text_key/source_key/target_key/label_key'
        )
    if task == 'classify':
      label = features[keys['label']]
      if not hasattr(label, 'names'):
        raise DataError(
          f'feature {keys["label"]!r} of {name!r} is not a tfds ClassLabel; '
          'choose a label_key that is'
        )
      self.label_names = tuple(label.names)
    self.data_dir, self._sources = data_dir, {}
    self._prepared = _prepared_stamp(str(builder.data_dir))

  def check_split(self, split):
    if not self.splits:  # empty only when TFDS metadata is unavailable (tfds.testing.mock_data)
      return
    super().check_split(split.split('[', 1)[0])  # 'train[:5%]' -> 'train'
    if '[' in split:  # a TFDS slice; tfds parses it (and says what is wrong with a bad one)
      try:
        self.info.splits[split]
      except Exception as e:  # noqa: BLE001 - tfds raises several types for bad slices
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise DataError(
          f'dataset {self.name!r}: bad split slice {split!r} ({reason}); '
          f"use TFDS slicing like 'train[:5%]' or 'train[100:200]'"
        ) from None

  def _source(self, split):
    import tensorflow_datasets as tfds

    if split not in self._sources:
      self.check_split(split)
      self._sources[split] = tfds.data_source(
        self.name,
        split=split,
        data_dir=self.data_dir,
        download=False,
        builder_kwargs={'file_format': 'array_record'},
      )
    return self._sources[split]

  def num_examples(self, split):
    return len(self._source(split))

  def example(self, split, index):
    raw = self._source(split)[index]
    text = lambda key: _as_str(raw[self.keys[key]])  # noqa: E731
    if self.task == 'lm':
      return {'text': text('text')}
    if self.task == 'translate':
      return {'source': text('source'), 'target': text('target')}
    return {'text': text('text'), 'label': int(raw[self.keys['label']])}

  def fingerprint(self, split):
    return (
      f'tfds:{self.info.full_name}:{split}:{self.num_examples(split)}:{sorted(self.keys.items())}'
      f':{self._prepared}'
    )


def _prepared_stamp(directory: str) -> str:
  """A digest of the prepared files' names, sizes and modification times.

  The name, version and split sizes alone do not change when a dataset is prepared again with
  other contents (a builder edited without a version bump, a dataset re-downloaded): the
  tokenizer and encoded-split caches keyed on them would then serve the old contents.
  """
  try:
    entries = sorted((e for e in os.scandir(directory) if e.is_file()), key=lambda e: e.name)
  except OSError:  # nothing prepared on disk (e.g. tfds.testing.mock_data)
    return ''
  stats = [(e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries]
  return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]


def open_source(dataset_cfg, task: str, split_record: dict | None = None) -> Source:
  """Opens the dataset named by dataset_cfg for `task`, preparing shipped builders if needed.

  split_record: a files source's `record` saved by an earlier run, to see exactly its rows.
  """
  name = get(dataset_cfg, 'name', '')
  if not name:
    raise DataError("dataset.name is empty; use e.g. 'jaxformer_shakespeare' or 'files'")
  if task not in TASKS:
    raise DataError(f'unknown task {task!r}; expected one of {", ".join(TASKS)}')
  known = KNOWN.get(name)
  if known is not None and known.task != task:
    raise DataError(
      f'dataset {name!r} is a {known.task!r} dataset, not {task!r}; pick a {task} dataset'
    )
  if name in ('files', 'text_files'):  # the user's own files ('text_files': the older LM name)
    from jaxformer.data.files import FilesSource

    return FilesSource(dataset_cfg, task, split_record, legacy=name == 'text_files')
  known = known or Known(task)
  keys = {
    k: get(dataset_cfg, f'{k}_key', '') or getattr(known, f'{k}_key') for k in EXAMPLE_FIELDS[task]
  }
  return TfdsSource(
    name,
    task,
    keys,
    default_data_dir(get(dataset_cfg, 'data_dir', '')),
    bool(get(dataset_cfg, 'download', False)),
  )


def split_names(dataset_cfg, source: Source) -> dict:
  """{'train', 'eval', 'test'} -> split name or '' (none), from dataset_cfg or the dataset's
  defaults."""
  if source.name == 'files':  # its splits are named by what the files give
    return {
      'train': 'train',
      'eval': 'validation' if 'validation' in source.splits else '',
      'test': 'test' if 'test' in source.splits else '',
    }
  known = KNOWN.get(source.name, Known(source.task))
  out = {}
  for role in ('train', 'eval', 'test'):
    value = get(dataset_cfg, f'{role}_split', None)
    out[role] = getattr(known, f'{role}_split') if value is None else value
    if role != 'train' and value is None and source.splits and out[role] not in source.splits:
      out[role] = ''  # a default split the dataset lacks (e.g. user files with val_fraction=0)
    if out[role]:
      source.check_split(out[role])  # a TFDS source also validates slices like 'train[:5%]'
  if not out['train']:
    raise DataError(f"dataset.train_split is empty for {source.name!r}; name a split, e.g. 'train'")
  return out


def tfds_builder(name: str, data_dir: str):
  """tfds.builder(name) writing/reading ArrayRecord in data_dir; DataError for unknown names."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core import registered

  base = name.split('/')[0]
  module = KNOWN[name].module if name in KNOWN else ''
  try:
    if module:
      importlib.import_module(module)
    with _no_tfds_warnings():
      return tfds.builder(name, data_dir=data_dir, file_format='array_record')
  except registered.DatasetNotFoundError:
    raise DataError(
      f'unknown dataset {base!r}; use one of {", ".join(KNOWN)} or any TFDS dataset name'
    ) from None
  except (ValueError, KeyError) as e:  # unknown config: "BuilderConfig ... not found"
    raise DataError(f'unknown config in dataset name {name!r}: {str(e).splitlines()[0]}') from None


def is_prepared(builder) -> bool:
  """builder.is_prepared(), without tfds's warning that an unprepared dataset is unprepared."""
  with _no_tfds_warnings():
    return builder.is_prepared()


@contextlib.contextmanager
def _no_tfds_warnings():
  # For an unprepared dataset tfds warns "Variant folder ... has no dataset_info.json": noise in
  # front of a one-line error, or before the dataset is prepared.
  absl_log = logging.getLogger('absl')
  level = absl_log.level
  absl_log.setLevel(logging.ERROR)
  try:
    yield
  finally:
    absl_log.setLevel(level)


def _answers_without_files(builder) -> bool:
  """True under tfds.testing.mock_data, which fakes reads of a dataset that was never prepared."""
  try:
    builder.as_data_source(split='train')
    return True
  except Exception:  # noqa: BLE001 - unprepared: tfds raises KeyError/AssertionError/...
    return False


def _as_str(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)
