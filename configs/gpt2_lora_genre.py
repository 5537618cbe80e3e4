"""Genre classification with LoRA on GPT-2 small, imported from Hugging Face (see the README).

    python -m jaxformer.hf import gpt2 --output exports/gpt2
    python train.py --config=configs/gpt2_lora_genre.py --workdir=runs/gpt2_lora_genre

The backbone and GPT-2's tokenizer come from `init_from`; only the LoRA adapters (query and
value, rank 8) and the classification head train. The model fields are GPT-2 small's, so the
imported backbone loads unchanged.
"""

from jaxformer.configs import genre_scratch


def get_config():
  c = genre_scratch.get_config()
  c.init_from = 'exports/gpt2'  # the output of python -m jaxformer.hf import
  c.model.d_model = 768
  c.model.num_heads = 12
  c.model.num_layers = 12
  c.model.mlp_ratio = 4.0
  c.model.d_ff = 0  # 0: mlp_ratio sets it (GPT-2's 3,072), not the Shakespeare LM's 512
  c.model.max_len = 1024  # GPT-2's position table: the classifier pads passages to it
  c.model.position = 'learned'
  c.model.norm = 'pre'
  c.model.activation = 'gelu'
  c.model.layer_norm_epsilon = 1e-5
  c.model.scan_layers = True
  c.model.dropout_rate = 0.1
  c.lora.rank = 8
  c.lora.alpha = 16.0
  c.lora.targets = 'query,value'
  c.pooling = 'last'  # the last token has read the whole passage (causal backbone)
  c.batch_size = 8
  c.learning_rate = 1e-3  # LoRA tolerates (and needs) a larger rate than full fine-tuning
  return c
