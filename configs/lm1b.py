"""A language model on TFDS lm1b (One Billion Words); prepare it once (README: Real datasets).

pip install -e ".[prepare]" && python -m jaxformer.data.prepare lm1b
"""

from jaxformer.configs import default


def get_config():
  c = default.get_config()
  c.task = 'lm'
  c.dataset.name = 'lm1b'
  c.dataset.eval_split = 'test'  # lm1b has train and test only
  c.dataset.test_split = ''
  c.dataset.vocab_size = 32000
  c.model.d_model = 512
  c.model.num_heads = 8
  c.model.num_layers = 6
  c.model.max_len = 256
  c.batch_size = 128
  c.num_train_steps = 100_000
  c.learning_rate = 1e-3
  c.warmup_steps = 1000
  c.eval_every_steps = 2000
  c.eval_steps = 50
  c.checkpoint_every_steps = 2000
  return c
