"""Number words, systematic split: can the model compose forms it learned apart?

Training never shows a thousands part ending in one of five two-digit values
(`jaxformer.data.numbers.HELD_OUT_ENDINGS`): "dreiundzwanzigtausend" occurs in no training pair,
in any number, though "dreiundzwanzig" does. The test split is made of exactly those numbers,
test_iid of numbers like the training ones. Same model and schedule as
configs/numbers_translate.py, so the two test figures side by side say how much of its exact
match is composition and how much is recall.

    python train.py --config=configs/numbers_systematic.py --workdir=runs/numbers_systematic
    python -m jaxformer.evaluate --workdir runs/numbers_systematic --split test_iid
"""

from jaxformer.configs import numbers_translate


def get_config():
  c = numbers_translate.get_config()
  c.dataset.name = 'jaxformer_numbers/en_de_systematic'
  return c
