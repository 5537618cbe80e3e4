"""Preparing the shipped datasets: one truthful line, and none of TFDS's download wording.

TFDS prints "Downloading and preparing dataset Unknown size ..." for every builder, even one that
is generated from files inside this package, and `is_prepared()` logs an absl warning ("Variant
folder ... has no dataset_info.json") whenever a dataset has simply not been prepared yet. A new
user reads both as a network access that failed, so the shipped datasets are prepared here.

Two runs started together (two experiments, one per core) may both find a dataset unprepared.
TFDS writes into a temporary folder and renames it into place, so the slower one's rename fails;
the dataset the faster one wrote is complete, and the slower run reads it.
"""

import contextlib
import io
import os
import time


def prepare_offline(builder, name: str) -> float:
  """Generates a shipped dataset from the package's files; prints one line; returns seconds."""
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()  # TFDS's per-split bars would flood the training log
  print(f'preparing {name} (offline, once) ...', end=' ', flush=True)
  start = time.perf_counter()
  outcome = 'failed'
  try:
    # TFDS prints its download wording to stdout; nothing is downloaded, so it is not shown.
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare()
    outcome = f'{time.perf_counter() - start:.1f} s'
  except FileExistsError:
    if not os.path.exists(os.path.join(builder.data_dir, 'dataset_info.json')):
      raise
    outcome = 'done by another process, which finished first'
  finally:
    print(outcome, flush=True)
  return time.perf_counter() - start
