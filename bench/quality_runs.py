"""How the quality bench runs things: train.py in a subprocess (exactly what a user runs), reused
while its config file and overrides are unchanged, and jaxformer.evaluate on the result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SIGNATURE = 'quality_signature.txt'  # in every workdir this bench made: only those may be deleted


def usage_error(message: str) -> None:
  """Stops the bench with one line on stderr and exit code 2, before it changes anything."""
  print(f'error: {message}', file=sys.stderr)
  raise SystemExit(2)


def refuse_foreign(workdir: str) -> None:
  """Exit 2 if `workdir` holds files but not this bench's signature (a run of the user's own)."""
  if os.path.isdir(workdir) and os.listdir(workdir):
    if not os.path.exists(os.path.join(workdir, SIGNATURE)):
      usage_error(
        f'{workdir} holds files bench.quality did not write (a run of your own?); it is left as '
        'it is: pass another --runs or --pretrained directory, or move it away'
      )


def _signature(config: str, overrides) -> str:
  with open(os.path.join(REPO, config), 'rb') as f:
    return hashlib.sha256(f.read() + json.dumps(list(overrides)).encode()).hexdigest()


def train(workdir: str, config: str, *overrides: str, fresh: bool = True) -> dict:
  """Runs train.py; returns its summary.json.

  Without `fresh`, a finished run is reused and an interrupted one resumes, but only if it was
  started from the same config file contents and overrides; otherwise it is trained again.
  Only directories this bench made (they hold its signature file) are ever deleted: anything
  else in `workdir` stops the bench with exit code 2.
  """
  refuse_foreign(workdir)
  summary_path = os.path.join(workdir, 'summary.json')
  sig_path = os.path.join(workdir, SIGNATURE)
  signature = _signature(config, overrides)
  stale = not os.path.exists(sig_path) or open(sig_path).read() != signature
  if os.path.exists(workdir) and (fresh or stale):
    shutil.rmtree(workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(sig_path, 'w') as f:
    f.write(signature)
  if not os.path.exists(summary_path):
    cmd = [
      sys.executable,
      'train.py',
      f'--config={config}',
      f'--workdir={workdir}',
      '--config.progress=false',
      *overrides,
    ]
    print('$', ' '.join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
    print(f'  done in {time.time() - t0:.0f}s', flush=True)
    with open(os.path.join(workdir, 'load.json'), 'w') as f:
      json.dump({'load_5min': os.getloadavg()[1]}, f)  # how shared the machine was at the end
  with open(summary_path) as f:
    summary = json.load(f)
  load_path = os.path.join(workdir, 'load.json')
  summary['load'] = json.load(open(load_path))['load_5min'] if os.path.exists(load_path) else None
  return summary


def evaluate(workdir: str, split: str, **kw) -> dict:
  from jaxformer import evaluate as ev
  from jaxformer import inference

  return ev.evaluate(inference.load(workdir), split, **kw)


def val_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == 'val']


DOCS = os.path.join(REPO, 'docs', 'results')
