"""Figures that touch no global matplotlib state: no backend switch, no pyplot figure registry.

`figure()` is a `matplotlib.figure.Figure` drawn by its own Agg canvas, so saving a PNG works
without a display and a notebook's backend (inline, widget) stays as the user set it.
"""

from __future__ import annotations

import os
import tempfile


def figure(**kwargs):
  """A new matplotlib Figure (kwargs: figsize, dpi, ...) with an Agg canvas; nothing global."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(**kwargs)
  FigureCanvasAgg(fig)
  return fig


def default_colors() -> list[str]:
  """The colours of the default property cycle (read, never changed)."""
  import matplotlib

  return matplotlib.rcParams['axes.prop_cycle'].by_key()['color']


def save_png(fig, path: str, dpi: int = 100) -> str:
  """Writes fig as a PNG that appears only when complete (temp file + rename). Returns path."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.png', dir=directory)
  os.close(fd)
  try:
    fig.savefig(tmp, format='png', dpi=dpi)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path
