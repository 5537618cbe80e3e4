"""Per-device bytes of parameters + AdamW state as the 'model' mesh axis grows (shapes only).

    python -m bench.sharded_memory            # 8 simulated CPU devices, a ~110M-parameter config

Nothing is allocated: jax.eval_shape gives the shapes, the runtime's shardings give each
device's shard. Sharded tensors (heads, MLP columns, vocabulary) shrink about 1/m; embed-only
tensors (norms, biases) stay replicated, which is why the total shrinks a little less.
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
from jaxformer.training.optim import make_optimizer  # noqa: E402
from jaxformer.training.runtime import make_runtime  # noqa: E402


def per_device_bytes(model_axis: int, cfg: ModelConfig) -> dict:
  config = default.get_config()
  config.mesh_shape = (jax.device_count() // model_axis, model_axis)
  model = DecoderLM(cfg)
  tokens = jnp.ones((1, cfg.max_len), jnp.int32)
  boxed = jax.eval_shape(lambda k: model.init(k, tokens)['params'], jax.random.key(0))
  params = nn.unbox(boxed)
  tx = make_optimizer(config, params)
  state = {
    'step': jax.ShapeDtypeStruct((), jnp.int32),
    'params': params,
    'opt_state': jax.eval_shape(tx.init, params),
    'rng': jax.eval_shape(jax.random.key, 0),
  }
  shardings = make_runtime(config).state_shardings(tx, boxed, state)

  def nbytes(tree, shards):
    return sum(
      int(np.prod(s.shard_shape(a.shape))) * a.dtype.itemsize
      for a, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shards))
      if hasattr(a, 'dtype') and not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
    )

  return {
    'model_axis': model_axis,
    'params_mb': nbytes(params, shardings['params']) / 2**20,
    'opt_state_mb': nbytes(state['opt_state'], shardings['opt_state']) / 2**20,
    'num_params': count_params(params),
  }


def main():
  cfg = ModelConfig(vocab_size=32768, d_model=768, num_heads=16, num_layers=12, max_len=1024)
  rows = [per_device_bytes(m, cfg) for m in (1, 2, 4, 8)]
  base = rows[0]['params_mb'] + rows[0]['opt_state_mb']
  print(f'{rows[0]["num_params"] / 1e6:.1f}M parameters, {jax.device_count()} devices')
  print('model axis | params MB/device | AdamW state MB/device | total vs m=1')
  for r in rows:
    total = r['params_mb'] + r['opt_state_mb']
    print(
      f'{r["model_axis"]:10d} | {r["params_mb"]:16.1f} | {r["opt_state_mb"]:21.1f} | '
      f'{total / base:.3f}'
    )


if __name__ == '__main__':
  main()
