"""Plots touch no global matplotlib state: no backend switch, no pyplot (a notebook keeps its
inline backend and its figure list)."""

from __future__ import annotations

import json
import sys

import matplotlib
import numpy as np
import pytest

from jaxformer import metrics, plotting
from jaxformer.training.writers import plot_loss_curves


@pytest.fixture
def no_global_matplotlib(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('matplotlib.use() switches the backend of the whole process')

  monkeypatch.setattr(matplotlib, 'use', refuse)
  # Importing pyplot now fails (pyplot.switch_backend is the other way to change the backend).
  monkeypatch.setitem(sys.modules, 'matplotlib.pyplot', None)


def _is_png(path) -> bool:
  with open(path, 'rb') as f:
    return f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_every_plot_renders_without_pyplot_or_a_backend_switch(tmp_path, no_global_matplotlib):
  rows = [{'step': s, 'split': 'train', 'loss': 3.0 / s} for s in (1, 2, 3)]
  rows.append({'step': 3, 'split': 'val', 'loss': 1.5})
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  assert _is_png(plot_loss_curves(str(tmp_path)))

  png = metrics.plot_confusion([[3, 1], [0, 2]], ['a', 'b'], str(tmp_path / 'confusion.png'))
  assert _is_png(png)

  attention = np.full((2, 2, 4, 4), 0.25)
  fig = plotting.plot_attention_grid(attention, labels=list('abcd'), title='uniform')
  assert _is_png(plotting.save_figure(fig, str(tmp_path / 'attention.png')))
  assert not list(tmp_path.glob('.tmp-*'))  # written through a temp file, nothing left over
