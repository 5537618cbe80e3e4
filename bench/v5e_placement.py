"""Which arrays live where: a ~1B-parameter GPT on a TPU v5e-8, mesh (data 2, model 4), per chip.

    python -m bench.v5e_placement       # 8 simulated CPU devices stand in for the 8 chips

Nothing is allocated: jax.eval_shape gives every shape, and the project's own placement
(training.runtime.make_runtime's state shardings, sharding.logical_shard_shape for activations)
gives each device's share. docs/parallelism.md quotes the printed table, and
tests/test_sharding_model.py checks it.
"""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import linen as nn  # noqa: E402
from jaxformer.configs import default  # noqa: E402

from jaxformer import ModelConfig  # noqa: E402
from jaxformer.models import DecoderLM, count_params  # noqa: E402
from jaxformer.sharding import logical_shard_shape  # noqa: E402
from jaxformer.training.optim import make_optimizer  # noqa: E402
from jaxformer.training.runtime import make_runtime  # noqa: E402

MESH = (2, 4)  # data x model on the 8 chips
BATCH, SEQ = 16, 1024  # global batch of 16 x 1024 tokens
# GPT-2 vocabulary padded to 50304; 18 layers of d_model 2048: 1.01B parameters.
CONFIG = ModelConfig(
  vocab_size=50257,
  vocab_multiple=128,
  d_model=2048,
  num_heads=16,
  num_layers=18,
  max_len=SEQ,
  dtype='bfloat16',  # what dtype='auto' picks on TPU
)


def _bytes(shape, dtype) -> int:
  return int(np.prod(shape)) * jnp.dtype(dtype).itemsize


def placement(cfg: ModelConfig = CONFIG, mesh_shape=MESH, batch=BATCH, seq=SEQ) -> dict:
  """{'num_params', 'rows': [(what, global shape, per-device shape, dtype, MiB per device)]}."""
  config = default.get_config()
  config.mesh_shape = mesh_shape
  config.batch_size = batch
  runtime = make_runtime(config)
  model = DecoderLM(cfg)
  tokens = jnp.ones((1, seq), jnp.int32)
  boxed = jax.eval_shape(lambda k: model.init(k, tokens)['params'], jax.random.key(0))
  params = nn.unbox(boxed)
  tx = make_optimizer(config, params)
  state = {
    'step': jax.ShapeDtypeStruct((), jnp.int32),
    'params': params,
    'opt_state': jax.eval_shape(tx.init, params),
    'rng': jax.eval_shape(jax.random.key, 0),
  }
  shardings = runtime.state_shardings(tx, boxed, state)

  def tree_mib(tree, shards) -> float:
    leaves = zip(jax.tree.leaves(tree), jax.tree.leaves(shards))
    return (
      sum(
        _bytes(s.shard_shape(a.shape), a.dtype)
        for a, s in leaves
        if not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
      )
      / 2**20
    )

  rows = [
    ('parameters (f32)', '', '', 'float32', tree_mib(params, shardings['params'])),
    (
      'AdamW mu + nu (f32)',
      '',
      '',
      'float32',
      tree_mib(state['opt_state'], shardings['opt_state']),
    ),
  ]
  table = params['backbone']['token_embed']['embedding']
  shard = logical_shard_shape(table.shape, ('vocab', 'embed'), runtime.mesh, runtime.rules)
  rows.append(
    ('token table (tied head)', table.shape, shard, 'float32', _bytes(shard, 'float32') / 2**20)
  )
  h, k, f, v = cfg.num_heads, cfg.head_dim, cfg.ff_dim, cfg.padded_vocab_size
  compute = jnp.dtype(cfg.compute_dtype).name
  activations = [  # one layer's forward outputs, kept for the backward pass without remat
    ('residual stream x', (batch, seq, cfg.d_model), ('batch', 'length', 'embed'), compute),
    ('q, k or v (each)', (batch, seq, h, k), ('batch', 'length', 'heads', 'kv'), compute),
    ('attention scores', (batch, h, seq, seq), ('batch', 'heads', 'length', None), 'float32'),
    ('MLP hidden', (batch, seq, f), ('batch', 'length', 'mlp'), compute),
    ('logits (once)', (batch, seq, v), ('batch', 'length', 'vocab'), 'float32'),
  ]
  for name, shape, axes, dtype in activations:
    shard = logical_shard_shape(shape, axes, runtime.mesh, runtime.rules)
    rows.append((name, shape, shard, dtype, _bytes(shard, dtype) / 2**20))
  return {'num_params': count_params(params), 'rows': rows}


def main():
  result = placement()
  print(f'{result["num_params"]:,} parameters on mesh {MESH}, batch {BATCH} x {SEQ}')
  print('| array | global shape | per-device shape | dtype | MiB per device |')
  print('|---|---|---|---|---|')
  for name, shape, shard, dtype, mib in result['rows']:
    size = '' if mib is None else f'{mib:,.1f}'
    print(f'| {name} | {shape} | {shard} | {dtype} | {size} |'.replace('()', ''))


if __name__ == '__main__':
  main()
