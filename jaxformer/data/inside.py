"""Reading a file of a run, an export or a tokenizer directory without trusting the directory.

    path = file_inside(workdir, 'data_split.json', 'the run')    # the real path, or DataError
    data = read_inside(workdir, 'data_split.json', 'the run')    # its bytes

A name that resolves (through `..` or a symbolic link) to somewhere outside the directory is
refused, and so is anything that is not a regular file: a FIFO or a device would block the reader
or feed it without end. Crafted runs and exports therefore fail with one DataError line.
"""

from __future__ import annotations

import os

from jaxformer.data.errors import DataError


def file_inside(directory: str, name: str, what: str = 'the directory') -> str:
  """The real path of `directory/name`; refuses one that leaves `directory` or is not a file.

  `what` names the directory in the message (e.g. 'the tokenizer directory', 'the run').
  """
  if not isinstance(name, str) or not name:
    raise DataError(f'{directory}: {name!r} is not a file name; refused')
  root = os.path.realpath(directory)
  path = os.path.realpath(os.path.join(root, name))
  if os.path.commonpath([root, path]) != root:
    raise DataError(f'{directory}: {name!r} points outside {what} ({path}); refused')
  if not os.path.isfile(path):  # follows links: a FIFO or device is not a regular file
    raise DataError(f'{directory}: {name!r} is not a regular file; refused')
  return path


def read_inside(directory: str, name: str, what: str = 'the directory') -> bytes:
  """The bytes of `directory/name`, checked as `file_inside` does."""
  with open(file_inside(directory, name, what), 'rb') as f:
    return f.read()
