"""Number words, unseen pairs: can the model apply a rule to words it has never seen?

Five tens-units pairs (`jaxformer.data.numbers.HELD_OUT_PAIRS`, e.g. 62) occur in no training
pair, in any position: neither "sixty-two" nor "zweiundsechzig" is ever shown, while "zwei",
"sechzig" and the units-before-tens order are, in other pairs. The test split is made of the
numbers that hold such a pair (62, 362, 62,000, 140,862, ...), test_iid of numbers like the
training ones. Meant to be harder than configs/numbers_systematic.py (whose held-out forms are
two known words joined), but the shipped config solves both: its SentencePiece pieces of an
unseen word are seen ones (docs/results.md). Same model and schedule as
configs/numbers_translate.py.

    python train.py --config=configs/numbers_unseen_pairs.py --workdir=runs/numbers_unseen_pairs
    python -m jaxformer.evaluate --workdir runs/numbers_unseen_pairs --split test_iid
"""

from jaxformer.configs import numbers_translate


def get_config():
  c = numbers_translate.get_config()
  c.dataset.name = 'jaxformer_numbers/en_de_unseen_pairs'
  return c
