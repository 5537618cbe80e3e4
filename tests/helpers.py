"""Shared test helpers: run train.py in a subprocess with a clean device setup."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(path: str):
  """A script of the checkout (e.g. 'bench/quality_report.py') as a module: bench/ and scripts/
  are folders of command lines, not part of the installed package. They run from the checkout's
  root (`python -m bench.quality`), so the root goes on sys.path for their own imports."""
  if REPO not in sys.path:
    sys.path.append(REPO)
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def run_train(*args: str, devices: int = 1, timeout: float = 300, env: dict | None = None):
  """`python train.py ARGS` with `devices` CPU devices; returns the CompletedProcess."""
  e = dict(os.environ)
  e['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  e.update(env or {})
  return subprocess.run(
    [sys.executable, os.path.join(REPO, 'train.py'), *args],
    cwd=REPO,
    env=e,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def start_train(*args: str, devices: int = 1, env: dict | None = None):
  """Starts train.py in the background (for kill and signal tests)."""
  e = dict(os.environ)
  e['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  e.update(env or {})
  return subprocess.Popen(
    [sys.executable, os.path.join(REPO, 'train.py'), *args],
    cwd=REPO,
    env=e,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def saved_steps(workdir: str) -> list[int]:
  """Finished checkpoint steps in a run's workdir (orbax writes step directories by number)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(d) for d in os.listdir(directory) if d.isdigit())


def equations(jaxpr):
  """Every equation of `jaxpr`, inside jits, scans, remats and custom derivatives too."""
  import jax.extend.core

  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from equations(sub)


def error_line(proc) -> str:
  """The one `error:` line a refused run prints last; fails on tracebacks."""
  lines = proc.stderr.strip().splitlines()
  assert lines and lines[-1].startswith('error: '), proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr.split('error: ')[-1]
  assert sum(line.startswith('error: ') for line in lines) == 1, proc.stderr[-3000:]
  return lines[-1]


def run_module(module: str, *args: str, timeout: float = 120):
  """`python -m MODULE ARGS` on one CPU device, from the checkout; returns the CompletedProcess."""
  return subprocess.run(
    [sys.executable, '-m', module, *args],
    cwd=REPO,
    env=dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1'),
    capture_output=True,
    text=True,
    timeout=timeout,
  )
