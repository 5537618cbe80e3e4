"""Evaluation metrics on plain Python / numpy values: translation and classification scores.

    exact_match(predictions, references)          fraction of exactly equal pairs
    bleu(hypotheses, references)                  corpus BLEU from sacreBLEU (0-100)
    accuracy(labels, predictions)                 fraction correct
    confusion_matrix(labels, predictions, n)      [n, n] counts, rows = true class
    balanced_accuracy(labels, predictions[, n])   mean recall over the classes present in labels
    perplexity(loss)                              exp(mean loss in nats), finite for any loss
    bits_per_byte(loss_sum, num_bytes)            summed nats per UTF-8 byte, in bits
    per_class_f1(labels, predictions, n)          [n] F1 of each class (0 where undefined)
    plot_confusion(matrix, labels, path)          the confusion matrix as a PNG

Balanced accuracy follows scikit-learn: a class with no true examples has no recall and is left
out of the mean, so a split that lacks a class is not penalised for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxformer import plotting


def _pairs(a: Sequence, b: Sequence, what: str) -> int:
  if len(a) != len(b):
    raise ValueError(
      f'{what}: got {len(a)} predictions but {len(b)} references; pass one of each per example'
    )
  if len(a) == 0:
    raise ValueError(f'{what}: no examples to score; pass at least one')
  return len(a)


def exact_match(predictions: Sequence, references: Sequence) -> float:
  """Fraction of predictions equal to their reference (strings, or token lists)."""
  n = _pairs(predictions, references, 'exact_match')
  return sum(_same(p, r) for p, r in zip(predictions, references)) / n


def _same(a, b) -> bool:
  if isinstance(a, str) or isinstance(b, str):
    return a == b
  return list(np.asarray(a).tolist()) == list(np.asarray(b).tolist())


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU (0-100) with sacreBLEU's defaults (13a tokenisation, one reference each)."""
  import sacrebleu  # imported here: only translation evaluation needs it

  _pairs(hypotheses, references, 'bleu')
  return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def _labels(labels, predictions, what: str) -> tuple[np.ndarray, np.ndarray]:
  _pairs(labels, predictions, what)
  return np.asarray(labels, np.int64).reshape(-1), np.asarray(predictions, np.int64).reshape(-1)


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
  y, p = _labels(labels, predictions, 'accuracy')
  return float(np.mean(y == p))


def confusion_matrix(
  labels: Sequence[int], predictions: Sequence[int], num_classes: int
) -> np.ndarray:
  """int64[num_classes, num_classes]; entry [i, j] counts examples of class i predicted as j."""
  y, p = _labels(labels, predictions, 'confusion_matrix')
  if y.min() < 0 or p.min() < 0 or max(y.max(), p.max()) >= num_classes:
    raise ValueError(f'confusion_matrix: labels and predictions must lie in [0, {num_classes})')
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (y, p), 1)
  return matrix


def balanced_accuracy(
  labels: Sequence[int], predictions: Sequence[int], num_classes: int | None = None
) -> float:
  """Mean over classes (that occur in labels) of recall = correct in class / examples of class.

  num_classes defaults to one more than the largest label or prediction.
  """
  if num_classes is None:
    num_classes = int(max(np.max(labels), np.max(predictions))) + 1
  matrix = confusion_matrix(labels, predictions, num_classes)
  support = matrix.sum(axis=1)
  present = support > 0
  return float(np.mean(np.diag(matrix)[present] / support[present]))


# math.exp overflows above ~709.78; a loss this large means "no better than noise" anyway.
MAX_PERPLEXITY_LOG = 700.0


def perplexity(loss: float) -> float:
  """exp(loss) for a mean loss in nats per token, clamped at exp(700) so it never overflows."""
  return math.exp(min(float(loss), MAX_PERPLEXITY_LOG))


def bits_per_byte(loss_sum: float, num_bytes: int) -> float:
  """Summed cross-entropy (nats) over some targets, in bits per UTF-8 byte of those targets.

  Unlike per-token loss it does not depend on the tokenizer, so LMs with different vocabularies
  compare on it.
  """
  return loss_sum / math.log(2) / max(num_bytes, 1)


def per_class_f1(
  labels: Sequence[int], predictions: Sequence[int], num_classes: int
) -> list[float]:
  """F1 = 2 TP / (2 TP + FP + FN) for each class; 0 for a class never seen nor predicted."""
  matrix = confusion_matrix(labels, predictions, num_classes)
  tp = np.diag(matrix).astype(np.float64)
  fp = matrix.sum(axis=0) - tp
  fn = matrix.sum(axis=1) - tp
  denom = 2 * tp + fp + fn
  return [float(2 * t / d) if d else 0.0 for t, d in zip(tp, denom)]


def plot_confusion(matrix, labels: Sequence[str], path: str, title: str = '') -> str:
  """Writes the confusion matrix as a PNG (rows: true class, columns: predicted). Returns path.

  Each cell shows its count; its colour is the row-normalised rate, so classes of different
  sizes compare at a glance. The file appears only when complete (temp file + rename).
  """
  matrix = np.asarray(matrix)
  n = matrix.shape[0]
  if matrix.shape != (n, n) or len(labels) != n:
    raise ValueError(
      f'plot_confusion: need a square matrix and one label per row, got {matrix.shape} '
      f'and {len(labels)} labels'
    )
  rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  fig = plotting.figure(figsize=(1.2 * n + 2.5, 1.2 * n + 2))
  ax = fig.subplots()
  ax.imshow(rates, cmap='Blues', vmin=0.0, vmax=1.0)
  for i in range(n):
    for j in range(n):
      ax.text(
        j,
        i,
        str(int(matrix[i, j])),
        ha='center',
        va='center',
        color='white' if rates[i, j] > 0.5 else 'black',
      )
  ax.set_xticks(range(n), labels, rotation=45, ha='right')
  ax.set_yticks(range(n), labels)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return plotting.save_png(fig, path)
