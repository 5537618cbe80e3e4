"""Prepares a real TFDS dataset once (download, extract, write ArrayRecord); training then reads it
through tfds.data_source and needs no TensorFlow.

  pip install -e ".[prepare]"                     # TensorFlow, for preparing only
  python -m jaxformer.data.prepare imdb_reviews   # [--data_dir=DIR] [--keep_downloads]

Why TensorFlow here: tfds 4.9.10 reads and writes every archive member through tf.io.gfile (its
extractor has no other path) and some builders glob with it (lm1b), so a real dataset that comes
as an archive cannot be prepared without TF. The datasets jaxformer ships are generated from
package files and need none of this.

Exit codes: 0 prepared (or already prepared), 2 bad input, missing TensorFlow or no network (one
line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request

import requests  # a tensorflow-datasets dependency; tfds downloads with it
from packaging.requirements import Requirement
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from jaxformer.data import sources
from jaxformer.data.errors import DataError

# Seconds to wait for a TCP connection to a dataset's download hosts: tfds's own retries take
# ~200 s to give up offline.
NETWORK_TIMEOUT_S = 5.0


def tensorflow_installed() -> bool:
  """Whether `import tensorflow` would find a package (without importing it: that takes seconds)."""
  try:
    return importlib.util.find_spec('tensorflow') is not None
  except (ImportError, ValueError):  # a finder that refuses it, or sys.modules['tensorflow'] = None
    return False


def install_command(checkout: str | None = None) -> str:
  """The pip command that installs the 'prepare' extra into this install of jaxformer."""
  checkout = checkout or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )
  if os.path.isfile(os.path.join(checkout, 'pyproject.toml')):
    return f'pip install -e "{checkout}[prepare]"'
  # Installed from a wheel: no checkout to name, so the extra's own pins for this platform.
  return 'pip install ' + ' '.join(f'"{r}"' for r in prepare_requirements())


def prepare_requirements() -> list[str]:
  """The 'prepare' extra's requirements that apply on this platform, from the installed metadata
  (tensorflow-cpu on Linux x86-64, tensorflow elsewhere, with the pinned versions)."""
  try:
    texts = importlib.metadata.requires('jaxformer') or []
  except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    texts = []
  wanted = []
  for text in texts:
    req = Requirement(text)
    # In the extra and on this platform: true with extra 'prepare', false without an extra (a
    # core dependency with a platform marker would pass the first test alone).
    marker = req.marker
    if (
      marker is not None
      and marker.evaluate({'extra': 'prepare'})
      and not marker.evaluate({'extra': ''})
    ):
      wanted.append(f'{req.name}{req.specifier}')
  return wanted or ['tensorflow']


def prepare_command(name: str, data_dir: str) -> str:
  return f'python -m jaxformer.data.prepare {name} --data_dir={data_dir}'


def how_to_prepare(name: str, data_dir: str) -> str:
  """The exact command(s) that prepare `name` on this install, for one-line error messages."""
  if tensorflow_installed():
    return prepare_command(name, data_dir)
  return f'{install_command()} && {prepare_command(name, data_dir)}'


def prepare(name: str, data_dir: str, keep_downloads: bool = False) -> str:
  """Downloads and prepares TFDS dataset `name` as ArrayRecord in data_dir; returns its directory.

  Raises DataError, before anything is downloaded or written, when TensorFlow is missing or no
  download host answers. The archives go to data_dir/downloads/<name> and are deleted once the
  dataset is written, unless keep_downloads.
  """
  import tensorflow_datasets as tfds

  builder = sources.tfds_builder(name, data_dir)
  if sources.is_prepared(builder):
    return os.fspath(builder.data_dir)
  if name.split('/')[0] not in sources.SHIPPED:
    if not tensorflow_installed():
      raise DataError(
        f'preparing {name!r} needs TensorFlow (tfds extracts archives with tf.io.gfile; training '
        f'does not need it): run `{how_to_prepare(name, data_dir)}`'
      )
    check_network(name, builder, data_dir)
  download_dir = os.path.join(data_dir, 'downloads', name.replace('/', '_'))
  try:
    builder.download_and_prepare(
      download_dir=download_dir,
      # tfds's prepared copies on GCS are TFRecord (not ArrayRecord) and need TF to read.
      download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )
  except (requests.RequestException, NonMatchingChecksumError) as e:
    # tfds keeps finished downloads in download_dir and writes the dataset atomically.
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise DataError(
      f'downloading {name!r} failed ({type(e).__name__}: {reason}); run '
      f'`{prepare_command(name, data_dir)}` again to resume'
    ) from None
  if not keep_downloads:
    shutil.rmtree(download_dir, ignore_errors=True)
  return os.fspath(builder.data_dir)


def check_network(name: str, builder, data_dir: str, timeout: float = NETWORK_TIMEOUT_S) -> None:
  """Raises DataError unless a TCP connection to one of the builder's download hosts opens.

  Skipped behind a proxy (direct connections may be blocked there while downloads work) and for
  builders that list no URLs.
  """
  if urllib.request.getproxies():
    return
  urls = [urllib.parse.urlsplit(url) for url in sorted(builder.url_infos or {})]
  hosts = sorted(
    {(u.hostname, u.port or (443 if u.scheme == 'https' else 80)) for u in urls if u.hostname}
  )
  if not hosts:
    return
  reached = []

  def connect(host, port):
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      reached.append(host)
    except OSError:
      pass

  # Daemon threads: a DNS lookup that hangs must not keep the process alive.
  threads = [threading.Thread(target=connect, args=hp, daemon=True) for hp in hosts]
  for thread in threads:
    thread.start()
  deadline = time.monotonic() + timeout
  for thread in threads:
    thread.join(max(0.0, deadline - time.monotonic()))
  if not reached:
    size = sum(info.size for info in builder.url_infos.values()) / 2**20
    raise DataError(
      f'cannot reach {", ".join(h for h, _ in hosts)} to download {name!r} ({size:,.0f} MiB): '
      f'no network? run `{prepare_command(name, "DIR")}` on a machine with internet and copy '
      f'DIR/{name.split("/")[0]} into {data_dir}'
    )


def _size_mib(path: str) -> float:
  total = sum(
    os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
  )
  return total / 2**20


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m jaxformer.data.prepare', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument(
    'name', help="a TFDS dataset name, e.g. imdb_reviews, lm1b, 'wmt14_translate/de-en'"
  )
  parser.add_argument(
    '--data_dir', default='', help='default: $JAXFORMER_DATA_DIR, else ~/.cache/jaxformer/tfds'
  )
  parser.add_argument(
    '--keep_downloads', action='store_true', help='keep the downloaded archives after preparing'
  )
  args = parser.parse_args(argv)
  data_dir = sources.default_data_dir(args.data_dir)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TF's start-up banner is not for users
  start = time.time()
  try:
    path = prepare(args.name, data_dir, args.keep_downloads)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
    return 2
  print(f'{args.name}: ready in {path} ({_size_mib(path):,.1f} MiB, {time.time() - start:.0f} s)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
