"""The benchmark's model shapes and the train step they build, shared by `python -m jaxformer.bench`
and the peers_bench plug-in (bench/jaxformer_peer.py), so both time the same program.

The shapes use peers_bench's vocabulary (vocab, n_layer, n_head, n_embd, block_size, batch);
`build_train` goes through the training loop's own code (make_optimizer, make_train_step).
"""

from __future__ import annotations

# Shapes in peers_bench's vocabulary (so bench/jaxformer_peer.py can share them) + extras.
GPT = dict(dropout=0.1, dtype='float32', peak_n=4096)
CONFIGS = {
  # smoke test: seconds
  'XS': dict(
    GPT,
    vocab=512,
    n_layer=2,
    n_head=2,
    n_embd=64,
    block_size=64,
    batch=4,
    peak_n=1024,
    new_tokens=32,
    default=('train', 'eval', 'decode'),
  ),
  # the config S: the same model as peers_bench's S
  'S': dict(
    GPT,
    vocab=4096,
    n_layer=6,
    n_head=6,
    n_embd=384,
    block_size=256,
    batch=16,
    new_tokens=256,
    default=('train', 'eval', 'decode', 'pipeline', 'compile_depth', 'remat_memory'),
  ),
  # ~350M parameters (GPT-2 medium shape, 50k vocab) at sequence 1024 in bf16, for one GPU
  'M350': dict(
    GPT,
    vocab=50304,
    n_layer=24,
    n_head=16,
    n_embd=1024,
    block_size=1024,
    batch=16,
    dtype='bfloat16',
    dropout=0.0,
    peak_n=8192,
    new_tokens=256,
    default=('train',),
  ),
}


def model_config(cfg: dict, **overrides):
  """A benchmark shape as a ModelConfig: GPT-2 (learned positions, tied head, pre-LN, gelu,
  dropout on embeddings, residual branches and attention probabilities like GPT-2's attn_pdrop)."""
  from jaxformer.config import ModelConfig

  fields = dict(
    vocab_size=cfg['vocab'],
    d_model=cfg['n_embd'],
    num_heads=cfg['n_head'],
    num_layers=cfg['n_layer'],
    max_len=cfg['block_size'],
    dropout_rate=cfg['dropout'],
    attention_dropout_rate=cfg['dropout'],
    layer_norm_epsilon=1e-5,
    dtype=cfg.get('dtype', 'float32'),
  )
  fields.update({k: v for k, v in overrides.items() if k in ModelConfig.__dataclass_fields__})
  return ModelConfig(**fields)


def synthetic_batches(cfg: dict, n: int = 4, seed: int = 1234):
  """peers_bench's batches (same generator, same seed): n arrays int32[batch, block_size + 1]."""
  import numpy as np

  rng = np.random.default_rng(seed)
  return [
    rng.integers(0, cfg['vocab'], size=(cfg['batch'], cfg['block_size'] + 1), dtype=np.int32)
    for _ in range(n)
  ]


def lm_batch(tokens):
  """int32[B, L + 1] -> the training loop's lm batch: inputs/targets int32[B, L], weights [B, L]."""
  import numpy as np

  return {
    'inputs': tokens[:, :-1],
    'targets': tokens[:, 1:],
    'weights': np.ones(tokens[:, 1:].shape, np.float32),
  }


def optimizer_config(**overrides):
  """peers_bench's AdamW (lr 3e-4, betas 0.9/0.95, eps 1e-8, wd 0.1, no clipping), as the fields
  `jaxformer.training.optim.make_optimizer` reads."""
  import types

  fields = dict(
    learning_rate=3e-4,
    adam_b1=0.9,
    adam_b2=0.95,
    weight_decay=0.1,
    lr_schedule='constant',
    warmup_steps=0,
    num_train_steps=1,
    min_lr_ratio=0.0,
    decay_embeddings=True,
    grad_clip_norm=0.0,
    reduce_on_plateau=False,
    freeze_backbone=False,
    backbone_lr_multiplier=1.0,
    head_only_steps=0,
    eval_every_steps=1,
  )
  fields.update(overrides)
  return types.SimpleNamespace(**fields)


def build_train(cfg: dict, seed: int = 0, **overrides):
  """(model, jitted train_step with the state donated, state) through the training loop's code."""
  import jax
  import jax.numpy as jnp
  from flax import linen as nn

  from jaxformer.models import DecoderLM
  from jaxformer.training.optim import make_optimizer
  from jaxformer.training.steps import make_train_step

  model = DecoderLM(model_config(cfg, **overrides))
  init_key, dropout_key = jax.random.split(jax.random.key(seed))
  x0 = jnp.zeros((1, cfg['block_size']), jnp.int32)
  params = nn.unbox(jax.jit(lambda k: model.init(k, x0)['params'])(init_key))
  tx = make_optimizer(optimizer_config(), params)
  state = {
    'step': jnp.zeros((), jnp.int32),
    'params': params,
    'opt_state': tx.init(params),
    'rng': dropout_key,
  }
  # Donating the state lets XLA update parameters and optimizer moments in place.
  return model, jax.jit(make_train_step(model, tx, task='lm'), donate_argnums=(0,)), state
