"""Evaluation metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from jaxformer import metrics


def test_exact_match_on_strings_and_token_lists():
  assert metrics.exact_match(['drei', 'vier', 'fünf'], ['drei', 'vier', 'fünf ']) == pytest.approx(
    2 / 3
  )
  assert metrics.exact_match([[1, 2], np.array([3])], [[1, 2], [3, 4]]) == 0.5
  with pytest.raises(ValueError, match='2 predictions but 1'):
    metrics.exact_match(['a', 'b'], ['a'])
  with pytest.raises(ValueError, match='no examples'):
    metrics.exact_match([], [])


def test_accuracy_confusion_and_balanced_accuracy_by_hand():
  # 6 examples of class 0, 2 of class 1, 2 of class 2; a majority-class guesser looks good on
  # accuracy (0.6) but not on balanced accuracy (mean recall = (1 + 0 + 0) / 3).
  labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
  majority = [0] * 10
  assert metrics.accuracy(labels, majority) == pytest.approx(0.6)
  assert metrics.balanced_accuracy(labels, majority, 3) == pytest.approx(1 / 3)

  preds = [0, 0, 0, 0, 1, 2, 1, 0, 2, 2]
  expected = np.array([[4, 1, 1], [1, 1, 0], [0, 0, 2]])
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, 3), expected)
  # recalls 4/6, 1/2, 2/2
  assert metrics.balanced_accuracy(labels, preds, 3) == pytest.approx((4 / 6 + 1 / 2 + 1) / 3)
  assert metrics.accuracy(labels, preds) == pytest.approx(0.7)


def test_balanced_accuracy_skips_classes_absent_from_labels():
  labels, preds = [0, 0, 1, 1, 1], [0, 2, 1, 1, 0]  # class 2 predicted once, never true
  assert metrics.balanced_accuracy(labels, preds, 3) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_balanced_accuracy_agrees_with_sklearn():
  sk = pytest.importorskip('sklearn.metrics')  # an optional extra ('experiments'), not a dependency
  rng = np.random.default_rng(0)
  labels, preds = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
  assert metrics.balanced_accuracy(labels, preds, 4) == pytest.approx(
    sk.balanced_accuracy_score(labels, preds)
  )
  np.testing.assert_allclose(
    metrics.per_class_f1(labels, preds, 4), sk.f1_score(labels, preds, average=None)
  )


def test_per_class_f1_by_hand():
  labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
  preds = [0, 0, 0, 0, 1, 2, 1, 0, 2, 2]
  # class 0: TP 4, FP 1, FN 2 -> 8/11; class 1: TP 1, FP 1, FN 1 -> 1/2;
  # class 2: TP 2, FP 1, FN 0 -> 4/5
  np.testing.assert_allclose(metrics.per_class_f1(labels, preds, 3), [8 / 11, 1 / 2, 4 / 5])
  assert metrics.per_class_f1([0, 0], [0, 0], 2) == [1.0, 0.0]  # class 1 never seen: 0, not NaN
  with pytest.raises(ValueError, match=r'\[0, 2\)'):
    metrics.confusion_matrix([0, 2], [0, 1], 2)


def test_bleu_is_sacrebleu_corpus_bleu():
  refs = ['the cat sat on the mat', 'a quick brown fox jumps']
  assert metrics.bleu(refs, refs) == pytest.approx(100.0)
  assert metrics.bleu(['zebra', 'xylophone'], refs) == pytest.approx(0.0)
  # One hypothesis of 6 words, reference of 6, with 5 unigram, 3 bigram, 2 trigram and 1 4-gram
  # matches: BLEU = exp(mean log p_n) * brevity penalty (1 here) = (5/6 * 3/5 * 2/4 * 1/3)^(1/4).
  hyp, ref = 'the cat sat on a mat', 'the cat sat on the mat'
  expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
  assert metrics.bleu([hyp], [ref]) == pytest.approx(expected, rel=1e-6)
  # Too short: brevity penalty exp(1 - r/c) with r = 6, c = 4; "the cat sat on" matches fully.
  assert metrics.bleu(['the cat sat on'], [ref]) == pytest.approx(
    100 * math.exp(1 - 6 / 4), rel=1e-6
  )


def test_plot_confusion_writes_a_png(tmp_path):
  path = str(tmp_path / 'sub' / 'confusion.png')
  metrics.plot_confusion(np.array([[3, 1], [0, 4]]), ['comedy', 'tragedy'], path)
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert [p.name for p in (tmp_path / 'sub').iterdir()] == ['confusion.png']  # no temp file left
  with pytest.raises(ValueError, match='one label per row'):
    metrics.plot_confusion(np.eye(2), ['only one'], path)


def test_balanced_accuracy_infers_the_number_of_classes():
  labels, preds = [0, 0, 1, 1, 1], [0, 2, 1, 1, 0]
  assert metrics.balanced_accuracy(labels, preds) == metrics.balanced_accuracy(labels, preds, 3)
  # analysis (linear probes) scores with the same function, not a copy of it.
  from jaxformer import analysis

  assert analysis.balanced_accuracy is metrics.balanced_accuracy


def test_perplexity_is_exp_loss_and_finite_for_any_loss():
  assert metrics.perplexity(2.0) == pytest.approx(math.exp(2.0))
  assert metrics.perplexity(100.0) == pytest.approx(math.exp(100.0))  # the loop clamped at 50
  assert math.isfinite(metrics.perplexity(1e6)) and metrics.perplexity(1e6) == math.exp(700.0)


def test_bits_per_byte_turns_summed_nats_into_bits_per_byte():
  # 12 bytes at a uniform 1-in-256 guess each cost 12 * ln(256) nats: exactly 8 bits per byte.
  assert metrics.bits_per_byte(12 * math.log(256), 12) == pytest.approx(8.0)
  assert metrics.bits_per_byte(5.0, 0) == pytest.approx(5.0 / math.log(2))  # no bytes: no crash
