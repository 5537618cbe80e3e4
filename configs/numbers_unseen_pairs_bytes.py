"""Number words, unseen pairs, spelled byte by byte: must the model write a word it never saw?

configs/numbers_unseen_pairs.py holds five tens-units pairs out of training (62: neither
"sixty-two" nor "zweiundsechzig" is ever shown), but its SentencePiece pieces of an unseen word
are seen ones ("zwei" + "undsech" + "zig"), so the model only reorders known pieces. Here every
token is one UTF-8 byte: to write "zweiundsechzig" the model has to spell the units word, "und"
and the tens word from the rules it learned on other pairs. Bytes make sequences about 3x longer
than pieces, so the schedule is the byte config that reached 0.995 exact match on the plain
en_de split (docs/results.md): batch 64, 1200 steps.

    python train.py --config=configs/numbers_unseen_pairs_bytes.py --workdir=runs/unseen_bytes
    python -m jaxformer.evaluate --workdir runs/unseen_bytes --split test_iid
"""

from jaxformer.configs import numbers_unseen_pairs


def get_config():
  c = numbers_unseen_pairs.get_config()
  c.dataset.tokenizer = 'byte'  # no vocabulary: the model must spell every word
  c.model.max_len = 80  # longest of 1-999,999 in bytes, with EOS: 74 English, 68 German
  c.batch_size = 64
  c.num_train_steps = 1200  # 1,775 s on one core of a 2-vCPU VM, the other busy (results.md)
  c.warmup_steps = 80
  c.eval_every_steps = 300
  c.checkpoint_every_steps = 300
  return c
