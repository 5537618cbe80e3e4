"""Per-device memory of the compiled train step as the 'model' mesh axis grows.

    python -m bench.train_step_memory          # 8 simulated CPU devices; a few minutes of compiling

A config whose activations dominate (d_model 512, 8 heads, length 512, batch 8, 2 layers) is
compiled on meshes (1, m) for m = 1, 2, 4, 8: the batch stays whole, so only tensor
parallelism changes; a last row is FSDP on (4, 2). XLA's `compiled.memory_analysis()` gives the
per-device temporary bytes; the optimized HLO (per-device shapes after SPMD partitioning) gives
the attention part: the bytes of the buffers shaped like attention scores and probabilities.
On CPU at length 512 those are the four query blocks' [batch, heads, 128, 128 .. 512] of the
blocked causal kernel (model/attention.py), not a [length, length] square, which here would
also match the residual stream [batch, length, d_model] (d_model = length = 512). Both numbers
are deterministic, so they can be measured on a loaded machine.
Each mesh is compiled twice: as the trainer does it (steps traced under the mesh and the
logical rules), and with the model's activation constraints inert (propagation from the
parameter shardings only).
"""

import contextlib
import math
import os
import re
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')

import jax  # noqa: E402
from jaxformer.configs import tiny  # noqa: E402

from jaxformer.model.attention import query_blocks, select_kernel  # noqa: E402
from jaxformer.training.prepare import compiled_steps, prepare  # noqa: E402

MESHES = [((1, 1), False), ((1, 2), False), ((1, 4), False), ((1, 8), False), ((4, 2), True)]

FLOAT_BYTES = {'f64': 8, 'f32': 4, 'bf16': 2, 'f16': 2}
# Instructions whose result is a view of, or a container for, buffers counted elsewhere.
ALIASING_OPS = {
  'bitcast',
  'get-tuple-element',
  'parameter',
  'tuple',
  'while',
  'call',
  'opt-barrier',
}


def step_config(mesh_shape=(1, 1), fsdp: bool = False):
  """The byte tokenizer's 259 ids, padded to 384 table rows by model.vocab_multiple (128)."""
  c = tiny.get_config()
  c.model.d_model, c.model.num_heads, c.model.num_layers, c.model.max_len = 512, 8, 2, 512
  c.batch_size = 8
  c.mesh_shape, c.fsdp = mesh_shape, fsdp
  return c


def compiled_train_step(config, constraints: bool = True):
  """The trainer's train step for `config`, compiled (for `config.mesh_shape`)."""
  with tempfile.TemporaryDirectory() as workdir:
    s = prepare(config, workdir)
    if not constraints:
      s.runtime.context = contextlib.nullcontext  # what the trainer did before it set the mesh
    train_step, _ = compiled_steps(s)
    batch = s.runtime.put_batch(next(s.data.train_iterator()))
    return train_step.lower(s.abstract_state, batch).compile()


def score_tails(model) -> set[tuple[int, int]]:
  """[queries, keys], the last two axes of the train step's attention scores for `model` (the
  run config's model section): the query blocks of the blocked causal kernel where the model
  picks it, else the whole [length, length] square."""
  length = model.max_len
  kernel = select_kernel(
    model.attention_impl,
    causal_self=True,
    q_len=length,
    needs_dropout=model.attention_dropout_rate > 0,
  )
  if kernel == 'causal_blocks':
    return {(end - start, end) for start, end in query_blocks(length)}
  return {(length, length)}


def attention_buffers(hlo: str, tails: set[tuple[int, int]]) -> list[tuple[str, tuple[int, ...]]]:
  """(dtype, per-device shape) of every buffer of the optimized HLO `hlo` shaped like attention
  scores or probabilities: floating point, rank >= 3, its last two axes one of `tails`
  (score_tails).

  Buffers are the results of the instructions that XLA materializes: those of the entry
  computation, loop bodies and called computations. The insides of fusions are not buffers,
  and bitcasts, tuples and loop carries only name buffers counted where they are made.
  """
  computations, fused, current = {}, set(), None
  for line in hlo.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith('{'):
      current = line.split()[1] if line.startswith('ENTRY') else line.split()[0]
      computations[current] = []
    elif current is not None and ' = ' in line:
      computations[current].append(line)
      if ' fusion(' in line:
        fused.update(re.findall(r'calls=(%[\w.-]+)', line))
  found = []
  instruction = re.compile(r'^\s*(?:ROOT )?%[\w.-]+ = (.*?) ([a-z][\w-]*)\(')
  for name, lines in computations.items():
    if name in fused:
      continue
    for line in lines:
      match = instruction.match(line)
      if not match or match.group(2) in ALIASING_OPS:
        continue
      for dtype, dims in re.findall(r'\b(f64|f32|bf16|f16)\[([\d,]+)\]', match.group(1)):
        shape = tuple(int(d) for d in dims.split(','))
        if len(shape) >= 3 and shape[-2:] in tails:
          found.append((dtype, shape))
  return found


def buffer_bytes(buffers: list[tuple[str, tuple[int, ...]]]) -> int:
  """Total bytes of (dtype, shape) buffers, e.g. attention_buffers'."""
  return sum(FLOAT_BYTES[dtype] * math.prod(shape) for dtype, shape in buffers)


def main():
  cfg = step_config().model
  print(
    f'{jax.device_count()} devices; d_model {cfg.d_model}, {cfg.num_heads} heads, '
    f'{cfg.num_layers} layers, length {cfg.max_len}, batch {step_config().batch_size}'
  )
  print(
    '| mesh (data, model) | temp MiB/device | vs (1, 1) | without the constraints (MiB) '
    '| attention MiB/device | vs (1, 1) |'
  )
  print('|---|---|---|---|---|---|')
  base = base_attention = None
  shapes = {}
  for mesh_shape, fsdp in MESHES:
    config = step_config(mesh_shape, fsdp)
    live = compiled_train_step(config)
    inert = compiled_train_step(config, constraints=False).memory_analysis().temp_size_in_bytes
    temp = live.memory_analysis().temp_size_in_bytes
    buffers = attention_buffers(live.as_text(), score_tails(config.model))
    attention = buffer_bytes(buffers)
    base, base_attention = base or temp, base_attention or attention
    name = f'{mesh_shape}' + (' FSDP' if fsdp else '')
    shapes[name] = sorted({f'{t}{list(s)}' for t, s in buffers})
    print(
      f'| {name} | {temp / 2**20:.1f} | {temp / base:.3f} | {inert / 2**20:.1f} '
      f'| {attention / 2**20:.1f} | {attention / base_attention:.3f} |',
      flush=True,
    )
  for name, found in shapes.items():
    print(f'{name}: {len(found)} distinct attention-shaped buffer shapes: {", ".join(found)}')


if __name__ == '__main__':
  main()
