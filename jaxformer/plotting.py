"""Figures that touch no global matplotlib state: no backend switch, no pyplot figure registry.

`figure()` is a `matplotlib.figure.Figure` drawn by its own Agg canvas, so saving a PNG works
without a display and a notebook's backend (inline, widget) stays as the user set it.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


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


def save_figure(fig, path: str, dpi: int = 110) -> str:
  fig.tight_layout()
  return save_png(fig, path, dpi=dpi)


def heatmap(
  ax,
  matrix,
  *,
  row_labels=None,
  col_labels=None,
  title: str = '',
  cmap: str = 'viridis',
  fmt: str | None = '{:.2f}',
  vmin=None,
  vmax=None,
  colorbar: bool = True,
):
  """matrix [R, C] as an image with optional per-cell numbers; returns the image."""
  matrix = np.asarray(matrix, np.float64)
  image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect='auto')
  if row_labels is not None:
    ax.set_yticks(range(len(row_labels)), row_labels)
  if col_labels is not None:
    ax.set_xticks(range(len(col_labels)), col_labels)
  if fmt and matrix.size <= 64:
    lo, hi = np.nanmin(matrix), np.nanmax(matrix)
    for (r, c), v in np.ndenumerate(matrix):
      dark = (v - lo) < 0.5 * (hi - lo) if cmap in ('viridis', 'magma', 'inferno') else False
      ax.text(
        c,
        r,
        fmt.format(v),
        ha='center',
        va='center',
        fontsize=7,
        color='white' if dark else 'black',
      )
  ax.set_title(title, fontsize=9)
  if colorbar:
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  return image


def plot_attention_grid(attention, labels=None, title: str = ''):
  """One map per (layer, head) from attention [layers, H, L, L] of a single passage; returns
  the figure.

  labels: the L token strings, written along the left column and bottom row.
  """
  attention = np.asarray(attention)
  layers, heads, length = attention.shape[:3]
  fig = figure(figsize=(2.6 * heads + 0.6, 2.6 * layers + 0.6))
  axes = fig.subplots(layers, heads, squeeze=False)
  for layer in range(layers):
    for head in range(heads):
      ax = axes[layer, head]
      ax.imshow(attention[layer, head], cmap='Blues', vmin=0.0, vmax=1.0)
      ax.set_xticks([])
      ax.set_yticks([])
      if layer == 0:
        ax.set_title(f'head {head}', fontsize=9)
      if head == 0:
        ax.set_ylabel(f'layer {layer}', fontsize=9)
      if labels is not None and length <= 64:
        if head == 0:
          ax.set_yticks(range(length), labels, fontsize=4)
        if layer == layers - 1:
          ax.set_xticks(range(length), labels, fontsize=4, rotation=90)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig
