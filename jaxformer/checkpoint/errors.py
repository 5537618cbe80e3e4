"""Errors and warnings raised by jaxformer.checkpoint.

train.py maps CheckpointError to exit code 2, so every message is written for the person at the
terminal: what is wrong, then what to do about it.
"""


class CheckpointError(Exception):
  """A checkpoint cannot be saved, found, trusted or used for what was asked."""


class CorruptCheckpointWarning(UserWarning):
  """A checkpoint failed to load or verify; it was moved aside and an older one is used."""
