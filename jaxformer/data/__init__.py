"""jaxformer's data layer: shipped TFDS datasets, your own files, tokenizers, grain pipelines.

Importing this package registers the TFDS builders jaxformer_shakespeare, jaxformer_genre and
jaxformer_numbers/{en_de,en_fr}. The training loop only needs `build_task_data`:

    data = build_task_data({'name': 'jaxformer_shakespeare'}, task='lm', max_len=256,
                           batch_size=32, seed=0)
    batch = next(data.train_iterator())
    # {'inputs', 'targets': int32[32, 256], 'weights': f32[32, 256]}
"""

from jaxformer.data import builders  # noqa: F401  (registers the TFDS builders)
from jaxformer.data.errors import DataError
from jaxformer.data.files import load_label_names, load_split_record, save_run_data_files
from jaxformer.data.pipeline import TaskData, build_task_data
from jaxformer.data.sources import KNOWN, default_data_dir
from jaxformer.data.tokenizers import (
  ByteTokenizer,
  SentencePieceTokenizer,
  load_tokenizer,
  train_sentencepiece,
)

__all__ = [
  'DataError',
  'load_label_names',
  'load_split_record',
  'save_run_data_files',
  'TaskData',
  'build_task_data',
  'KNOWN',
  'default_data_dir',
  'ByteTokenizer',
  'SentencePieceTokenizer',
  'load_tokenizer',
  'train_sentencepiece',
]
