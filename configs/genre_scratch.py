"""Genre classification (comedy / history / tragedy) from scratch, 100 labelled passages per class.

Validation is 50 per class from the training plays; test is 200 per class from held-out plays.
"""

from jaxformer.configs import default, shakespeare_lm

# The default LM's backbone shape: genre_finetune.py loads that LM's weights into it, and from
# scratch compares with fine-tuning only if the architecture is the same.
BACKBONE = (
  'd_model',
  'num_heads',
  'num_layers',
  'mlp_ratio',
  'd_ff',
  'activation',
  'use_bias',
  'norm',
  'max_len',
  'position',
)


def get_config():
  c = default.get_config()
  c.task = 'classify'
  c.dataset.name = 'jaxformer_genre'
  c.dataset.tokenizer = 'sentencepiece'
  c.dataset.vocab_size = 4096
  c.dataset.test_split = 'test'
  lm = shakespeare_lm.get_config().model  # max_len 256: passages (<= ~200 tokens) fit whole
  for field in BACKBONE:
    c.model[field] = lm[field]
  c.model.scan_layers = False  # as the Shakespeare LM (and faster on CPU at 4 layers)
  c.model.dropout_rate = 0.1
  c.pooling = 'mean'
  c.batch_size = 32
  c.num_train_steps = 600
  c.learning_rate = 5e-4
  c.warmup_steps = 30
  c.eval_every_steps = 20
  c.log_every_steps = 10
  c.checkpoint_every_steps = 1000
  c.early_stopping.patience = 6  # 300 examples overfit quickly: stop and keep the best
  # On 150 validation passages the loss turns up while accuracy still rises.
  c.early_stopping.monitor = 'error'
  return c
