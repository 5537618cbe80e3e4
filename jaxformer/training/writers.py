"""Where metrics go: metrics.jsonl, TensorBoard event files (tensorboardX, no TensorFlow) and a PNG.

Only process 0 writes; other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any

from jaxformer import plotting
from jaxformer.training.errors import ConfigError


def _clean(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf; keep the information as text
  return value


def _row_step(line: str) -> int | None:
  """The step of one metrics.jsonl line; None for a partial or foreign line."""
  try:
    row = json.loads(line)
  except ValueError:
    return None
  step = row.get('step') if isinstance(row, dict) and line.endswith('\n') else None
  return step if isinstance(step, int) else None


class MetricsWriter:
  """Appends one JSON object per event to `metrics.jsonl` and mirrors scalars to TensorBoard."""

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if not enabled:
      return
    if os.path.exists(self.path):
      self._truncate_after(resume_step or 0)
    from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it

    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), flush_secs=30)

  def _truncate_after(self, step: int) -> None:
    """Drops events newer than the step training restarts from: they will be logged again.

    A fresh start (no usable checkpoint) keeps nothing, and a line cut short by a kill is
    dropped, so the log equals that of an uninterrupted run up to `step`.
    """
    with open(self.path) as f:
      kept = [line for line in f if _row_step(line) is not None and 0 < _row_step(line) <= step]
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, split: str, **metrics: Any) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), 'split': split, **{k: _clean(v) for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    for name, value in metrics.items():
      if isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(f'{split}/{name}', value, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if _row_step(line) is not None]


def plot_loss_curves(workdir: str, out_path: str | None = None, title: str = '') -> str | None:
  """Train and validation loss against step, from metrics.jsonl, as a PNG. Returns its path."""
  rows = read_metrics(workdir)
  curves = {
    split: [
      (r['step'], r['loss'])
      for r in rows
      if r.get('split') == split and isinstance(r.get('loss'), (int, float))
    ]
    for split in ('train', 'val')
  }
  if not any(curves.values()):
    return None
  fig = plotting.figure(figsize=(6, 4))
  ax = fig.subplots()
  for split, pts in curves.items():
    if pts:
      ax.plot(*zip(*pts), marker='o' if split == 'val' else None, label=split)
  ax.set_xlabel('step')
  ax.set_ylabel('loss (nats/token)')
  ax.set_title(title or os.path.basename(os.path.abspath(workdir)))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  return plotting.save_png(fig, out_path or os.path.join(workdir, 'loss_curve.png'))


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes JSON through a temporary file and a rename: readers never see half a file.

  A failed write (disk full, read-only) leaves neither a temporary file nor a changed `path`,
  and raises ConfigError saying what failed and how many bytes it needed.
  """
  text = json.dumps(obj, indent=2, sort_keys=True, default=str) + '\n'
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise write_failed(path, e, len(text.encode())) from None


def write_failed(path: str, error: OSError, needed_bytes: int) -> ConfigError:
  """One line for a failed write: which file, why, and the space it needed."""
  try:
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    space = f'it needs {needed_bytes:,} bytes, {free:,} are free there'
  except OSError:
    space = f'it needs {needed_bytes:,} bytes'
  return ConfigError(
    f'could not write {path} ({error.strerror or error}); {space}: free some space or fix '
    'the permissions, then re-run'
  )
