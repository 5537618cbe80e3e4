"""Transformer-base translation on TFDS wmt14_translate/de-en; prepare it once (README).

pip install -e ".[prepare]" && python -m jaxformer.data.prepare wmt14_translate/de-en
"""

from jaxformer.configs import default


def get_config():
  c = default.get_config()
  c.task = 'translate'
  c.dataset.name = 'wmt14_translate/de-en'
  c.dataset.source_key = 'de'
  c.dataset.target_key = 'en'
  c.dataset.vocab_size = 32000
  c.model.d_model = 512
  c.model.num_heads = 8
  c.model.num_encoder_layers = 6
  c.model.num_decoder_layers = 6
  c.model.max_len = 256
  c.model.tie_embeddings = True
  c.batch_size = 256
  c.num_train_steps = 100_000
  c.learning_rate = 1e-3
  c.lr_schedule = 'rsqrt'  # the 2017 paper's inverse square-root schedule
  c.warmup_steps = 4000
  c.label_smoothing = 0.1
  c.eval_every_steps = 2000
  c.eval_steps = 50
  c.checkpoint_every_steps = 2000
  return c
