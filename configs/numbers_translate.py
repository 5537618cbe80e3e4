"""Translation of English number words into German ("twenty-three" -> "dreiundzwanzig")."""

from jaxformer.configs import default


def get_config():
  c = default.get_config()
  c.task = 'translate'
  c.dataset.name = 'jaxformer_numbers/en_de'
  # Pieces such as 'hundert', 'zig', ' thousand': sequences 4x shorter than bytes.
  c.dataset.tokenizer = 'sentencepiece'
  c.dataset.vocab_size = 400  # en_de: 256 byte pieces, 5 specials, 27 characters, 112 merged pieces
  c.dataset.test_split = 'test'
  c.model.d_model = 128
  c.model.num_heads = 4
  c.model.num_encoder_layers = 3
  c.model.num_decoder_layers = 3
  c.model.max_len = 32  # longest with EOS: 21 source pieces, 11 German / 25 French target pieces
  c.model.scan_layers = False  # 3+3 layers: a Python loop is faster per step on XLA:CPU than scan
  c.model.dropout_rate = 0.1
  c.batch_size = 128
  c.num_train_steps = 700  # about 4 minutes on a quiet 2-core CPU (docs/results.md)
  c.learning_rate = 2e-3
  c.warmup_steps = 50
  c.eval_every_steps = 175
  c.checkpoint_every_steps = 175
  c.label_smoothing = 0.0  # exact spelling is the goal: let the model become confident
  return c
