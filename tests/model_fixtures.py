"""Shared helpers for the model tests: tiny configs, token batches and random parameters.

Random parameters (not model.init) keep the tests fast: XLA:CPU compiles the initializers'
random-number code slowly, and the tests only need the tree's shapes.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer import ModelConfig

KEY = jax.random.key(0)


def tiny(**kw):
  base = dict(
    vocab_size=32,
    d_model=16,
    num_heads=4,
    num_layers=2,
    num_encoder_layers=2,
    num_decoder_layers=2,
    max_len=16,
    dropout_rate=0.1,
    scan_layers=True,  # the stacked layout the model tests index ('layer'); 'auto' would loop
  )
  return ModelConfig(**{**base, **kw})


def tokens(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).integers(1, 32, shape), jnp.int32)


def random_params(model, *args, seed=0):
  """Params with the model's tree and shapes: N(0, 0.1) entries, LayerNorm scales around 1."""
  abstract = nn.unbox(jax.eval_shape(model.init, KEY, *args)['params'])
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    x = rng.normal(0.0, 0.1, leaf.shape) + (1.0 if path[-1].key == 'scale' else 0.0)
    return jnp.asarray(x, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)
