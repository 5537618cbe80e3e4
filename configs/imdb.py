"""Sentiment classification on TFDS imdb_reviews; prepare it once (README: Real datasets).

pip install -e ".[prepare]" && python -m jaxformer.data.prepare imdb_reviews
"""

from jaxformer.configs import default


def get_config():
  c = default.get_config()
  c.task = 'classify'
  c.dataset.name = 'imdb_reviews'
  c.dataset.eval_split = 'test'
  c.dataset.test_split = ''
  c.dataset.vocab_size = 16000
  c.model.d_model = 256
  c.model.num_heads = 4
  c.model.num_layers = 4
  c.model.max_len = 512
  c.batch_size = 32
  c.num_train_steps = 5000
  c.learning_rate = 5e-4
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  return c
