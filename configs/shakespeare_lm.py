"""The default: a GPT-style language model on the embedded Shakespeare corpus.

850 steps x 4,096 tokens: 898 s on one 2-vCPU VM, 1,367 s on another (README); add
--config.train_minutes=15 to fit a time instead. Validation is the 8 held-out plays.
"""

from jaxformer.configs import default


def get_config():
  c = default.get_config()
  c.task = 'lm'
  c.dataset.name = 'jaxformer_shakespeare'
  c.dataset.tokenizer = 'sentencepiece'
  c.dataset.vocab_size = 4096  # BPE merges most words into one token; bigger costs softmax time
  c.dataset.test_split = ''  # the held-out plays are the validation split
  c.model.d_model = 256
  c.model.num_heads = 4
  c.model.num_layers = 4
  c.model.max_len = 256  # longer context: lower loss per token; genre passages fit whole
  c.model.position = 'rope'  # no position table, so fine-tuning may use other lengths
  # 4 layers: a Python loop is ~18% faster per step on XLA:CPU than scan.
  c.model.scan_layers = False
  c.model.dropout_rate = 0.1
  c.batch_size = 16  # 16 x 256 = 4096 tokens per step
  c.num_train_steps = 850  # 898-1,367 s on 2-vCPU machines (2,900-4,400 tokens/s)
  c.learning_rate = 2e-3
  c.warmup_steps = 100
  c.eval_every_steps = 100
  c.eval_steps = 20  # 20 x 16 windows of the held-out plays per evaluation
  c.checkpoint_every_steps = 100
  return c
