"""Encoder-decoder translation of English number words into German ("twenty-three" -> "dreiundzwanzig")."""
from configs import default


def get_config():
  c = default.get_config()
  c.task = 'translate'
  c.dataset.name = 'jaxformer_numbers/en_de'
  c.dataset.tokenizer = 'byte'     # no vocabulary to learn; the model must spell every word
  c.dataset.test_split = 'test'
  c.model.d_model = 128
  c.model.num_heads = 4
  c.model.num_encoder_layers = 3
  c.model.num_decoder_layers = 3
  c.model.max_len = 80             # byte lengths reach ~72 with EOS; 80 truncates nothing
  c.model.scan_layers = False      # 3+3 layers: a Python loop is faster per step on XLA:CPU than scan
  c.model.dropout_rate = 0.1
  c.batch_size = 64
  c.num_train_steps = 950          # about 10 minutes on a quiet 2-core CPU (800 steps: 90% exact match)
  c.learning_rate = 2e-3
  c.warmup_steps = 80
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 250
  c.label_smoothing = 0.0          # exact spelling is the goal: let the model become confident
  return c
