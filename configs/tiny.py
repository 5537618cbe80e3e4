"""A tiny LM config that trains in seconds: for tests and smoke runs, not for quality."""

from jaxformer.configs import default


def get_config():
  c = default.get_config()
  c.task = 'lm'
  c.dataset.name = 'jaxformer_shakespeare'
  c.dataset.tokenizer = 'byte'  # no tokenizer training
  c.dataset.test_split = ''
  c.model.d_model = 32
  c.model.num_heads = 2
  c.model.num_layers = 2
  c.model.max_len = 32
  c.batch_size = 8
  c.num_train_steps = 20
  c.eval_every_steps = 10
  c.eval_steps = 2
  c.log_every_steps = 5
  c.checkpoint_every_steps = 10
  c.warmup_steps = 5
  c.sample_tokens = 40
  c.progress = False
  return c
