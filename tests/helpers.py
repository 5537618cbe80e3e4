"""Shared test helpers: run train.py in a subprocess with a clean device setup."""
from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(*args: str, devices: int = 1, timeout: float = 300, env: dict | None = None):
  """`python train.py ARGS` with `devices` CPU devices; returns the CompletedProcess."""
  e = dict(os.environ)
  e['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  e.update(env or {})
  return subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), *args], cwd=REPO, env=e,
                        capture_output=True, text=True, timeout=timeout)
