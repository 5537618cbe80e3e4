"""One writer per workdir: an exclusive lock held for the life of a training run.

The lock is `flock` on `<workdir>/.lock`, taken without waiting. The kernel drops it when the
holding process dies, however it dies (kill -9 included), so a lock left by a killed run never
blocks the next one: the file stays, the lock does not. The file holds who took it (pid, host,
start time) so a refused run can name the holder.

Shared filesystems: on Linux, flock on NFS is carried out as a POSIX byte-range lock through the
NFS lock manager (NFSv4: lease based), so it excludes writers on other hosts too, and a crashed
host's lock expires with its lease. On multi-host jobs only process 0 takes the lock (it is the
one that writes config.json, metrics and the report); the outcome is broadcast, so every process
stops together. A filesystem without lock support (some FUSE mounts) refuses flock with an
OSError: the run then goes on with a warning, since refusing would make it unusable there.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket

import jax
import numpy as np

from jaxformer.training.errors import ConfigError

log = logging.getLogger(__name__)

LOCK_FILE = '.lock'


class WorkdirLock:
  """`with WorkdirLock(workdir):` -- raises ConfigError naming the holder if another run has it.

  Creates the workdir (and only the lock file in it) when it does not exist yet.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None
    self._created = False  # this run created the workdir: remove it if it leaves nothing else

  def acquire(self) -> None:
    problem = self._try_acquire() if jax.process_index() == 0 else ''
    if jax.process_count() > 1:
      problem = _broadcast_text(problem)  # every process stops, or none
    if problem:
      self.release()
      raise ConfigError(problem)

  def _try_acquire(self) -> str:
    """'' when this process now holds the lock, else why not (one line)."""
    try:
      if not os.path.isdir(self.workdir):
        os.makedirs(self.workdir)
        self._created = True
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileExistsError:
      return f'--workdir {self.workdir} is a file, not a directory: pick another --workdir'
    except OSError as e:
      return f'cannot create {self.path} ({e.strerror}): make --workdir writable or pick another'
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        log.warning('cannot lock %s (%s): two runs could share this workdir', self.path, e)
        self._fd = fd
        return ''
      os.close(fd)
      return (
        f'workdir {self.workdir} is in use by another run ({_describe_holder(self.path)}); '
        'wait for it to finish, stop it, or use a new --workdir'
      )
    self._fd = fd
    info = {
      'pid': os.getpid(),
      'host': socket.gethostname(),
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    # Written through the locked descriptor: another process that opened the file to read it
    # never closes our lock (flock locks belong to the open file, not to the path).
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
    return ''

  def holds_a_run(self) -> bool:
    """The workdir holds anything besides the lock file (a previous run, or part of one)."""
    return os.path.isdir(self.workdir) and any(n != LOCK_FILE for n in os.listdir(self.workdir))

  def release(self) -> None:
    if self._fd is None:
      return
    # A run that wrote nothing leaves nothing: not even the workdir it created for its lock.
    if self._created and not self.holds_a_run():
      os.unlink(self.path)
      os.rmdir(self.workdir)
    os.close(self._fd)  # closing drops the lock; the file stays, harmless once unlocked
    self._fd = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _describe_holder(path: str) -> str:
  try:
    with open(path) as f:
      info = json.loads(f.read() or '{}')
    return f'pid {info["pid"]} on host {info["host"]}, started {info["started"]}'
  except (OSError, ValueError, KeyError, TypeError):
    return f'holder unknown: {path} is locked but unreadable'


def _broadcast_text(text: str) -> str:
  """Process 0's `text` on every process (a fixed-size byte buffer through a collective)."""
  from jax.experimental import multihost_utils

  buf = np.zeros(1024, np.uint8)
  raw = text.encode()[:1024]
  buf[: len(raw)] = np.frombuffer(raw, np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  return bytes(out[out != 0].astype(np.uint8)).decode(errors='replace')
