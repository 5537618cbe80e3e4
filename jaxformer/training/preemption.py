"""SIGTERM (a TPU VM about to be preempted) and Ctrl-C ask the loop to save and stop.

The handler only sets a flag; the loop checks it between steps, writes a final synchronous
checkpoint of the current step and exits 0. A second Ctrl-C exits at once.
"""

from __future__ import annotations

import signal
import threading


class PreemptionGuard:
  def __init__(self):
    self.requested: str | None = None
    self._previous: dict[int, object] = {}

  def _handle(self, signum, frame):
    if self.requested is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: the user really wants out now
    self.requested = signal.Signals(signum).name

  def __enter__(self):
    # Signal handlers can only be installed from the main thread (not e.g. a notebook worker).
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
