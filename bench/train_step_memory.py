"""Per-device temporary memory of the compiled train step as the 'model' mesh axis grows.

    python -m bench.train_step_memory          # 8 simulated CPU devices; a few minutes of compiling

A config whose activations dominate (d_model 512, 8 heads, length 512, batch 8, 2 layers) is
compiled on meshes (1, m) for m = 1, 2, 4, 8: the batch stays whole, so only tensor
parallelism changes; a last row is FSDP on (4, 2). XLA's `compiled.memory_analysis()` gives the
per-device bytes; they are deterministic, so they can be measured on a loaded machine. Each mesh
is compiled twice: as the trainer does it (steps traced under the mesh and the logical rules),
and with the model's activation constraints inert (propagation from the parameter shardings
only).
"""

import contextlib
import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import jax  # noqa: E402
from jaxformer.configs import tiny  # noqa: E402

from jaxformer.training.prepare import compiled_steps, prepare  # noqa: E402

MESHES = [((1, 1), False), ((1, 2), False), ((1, 4), False), ((1, 8), False), ((4, 2), True)]


def step_config(mesh_shape=(1, 1), fsdp: bool = False):
  c = tiny.get_config()
  c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.max_len = 512, 8, 2, 512
  c.model.vocab_size = 264  # the byte tokenizer's 259 ids, rounded up to split 8 ways
  c.batch_size = 8
  c.mesh_shape, c.fsdp = mesh_shape, fsdp
  return c


def temp_bytes(mesh_shape, fsdp: bool, constraints: bool) -> int:
  """Per-device temporary bytes of the compiled train step on `mesh_shape`."""
  with tempfile.TemporaryDirectory() as workdir:
    s = prepare(step_config(mesh_shape, fsdp), workdir)
    if not constraints:
      s.runtime.context = contextlib.nullcontext  # what the trainer did before it set the mesh
    train_step, _ = compiled_steps(s)
    batch = s.runtime.put_batch(next(s.data.train_iterator()))
    compiled = train_step.lower(s.abstract_state, batch).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def main():
  cfg = step_config().model
  print(
    f'{jax.device_count()} devices; d_model {cfg.d_model}, {cfg.num_heads} heads, '
    f'{cfg.num_layers} layers, length {cfg.max_len}, batch {step_config().batch_size}'
  )
  print('| mesh (data, model) | temp MiB/device | vs (1, 1) | without the constraints (MiB) |')
  print('|---|---|---|---|')
  base = None
  for mesh_shape, fsdp in MESHES:
    live, inert = temp_bytes(mesh_shape, fsdp, True), temp_bytes(mesh_shape, fsdp, False)
    base = base or live
    name = f'{mesh_shape}' + (' FSDP' if fsdp else '')
    print(f'| {name} | {live / 2**20:.1f} | {live / base:.3f} | {inert / 2**20:.1f} |', flush=True)


if __name__ == '__main__':
  main()
