"""Placement read from the compiled train step itself: XLA's optimized HLO has per-device shapes.

Attention scores and probabilities are [batch, heads, length, length] arrays. On a (data, model)
mesh every device must hold only [batch / data, heads / model, length, length] of them. Tensor
parallelism (1, 8) and (2, 4) gets that from XLA's propagation of the parameter shardings alone;
under FSDP it does not: without the model's activation constraints traced under the mesh and
the rules, every device computed attention for the whole batch (scores [8, 4, L, L] instead of
[2, 4, L, L] on (4, 2), and 3x the temporary memory).
"""

import math
import re

import pytest
from helpers import load_script
from test_parallel import _config

from jaxformer.training.prepare import compiled_steps, prepare

LENGTH, BATCH, HEADS = 24, 8, 8  # a length no other dimension of the model has


def _score_shapes(hlo: str) -> set[tuple[int, ...]]:
  """Every f32/bf16 array shape in `hlo` ending in [length, length]: scores, probabilities."""
  shapes = set()
  for m in re.finditer(r'(?:f32|bf16)\[([\d,]+)\]', hlo):
    dims = tuple(int(d) for d in m.group(1).split(','))
    if len(dims) >= 3 and dims[-2:] == (LENGTH, LENGTH):
      shapes.add(dims)
  return shapes


def _compiled_steps(mesh_shape, tmp_path, **overrides):
  """The trainer's own train and eval steps, compiled for `mesh_shape`."""
  # One layer: the scanned stack then adds a leading axis of 1, not of num_layers.
  config = _config(mesh_shape, **{'model.max_len': LENGTH, 'model.num_layers': 1, **overrides})
  s = prepare(config, str(tmp_path / 'run'))
  train_step, eval_step = compiled_steps(s)
  batch = s.runtime.put_batch(next(s.data.train_iterator()))
  assert batch['inputs'].shape == (BATCH, LENGTH)
  train = train_step.lower(s.abstract_state, batch).compile()
  return train, eval_step.lower(s.abstract_state['params'], batch).compile()


@pytest.mark.parametrize(
  'mesh_shape,overrides',
  [
    ((1, 8), {}),
    ((2, 4), {}),
    ((2, 4), {'model.attention_impl': 'einsum'}),  # the path that sows probabilities
    ((4, 2), {'fsdp': True}),  # propagation alone leaves the batch whole here
  ],
)
def test_attention_scores_of_train_and_eval_steps_are_split_over_heads_and_batch(
  mesh_shape, overrides, tmp_path
):
  data, model = mesh_shape
  per_device = (BATCH // data, HEADS // model, LENGTH, LENGTH)
  steps = _compiled_steps(mesh_shape, tmp_path, **overrides)
  for step, compiled in zip(('train', 'eval'), steps, strict=True):
    shapes = _score_shapes(compiled.as_text())
    assert shapes, f'no attention scores found in the compiled {step} step'
    # The scores appear with exactly this device's share of batch and heads...
    assert any(shape[-4:] == per_device for shape in shapes), (step, per_device, sorted(shapes))
    # ...and no [., L, L] buffer holds more rows than that share (nothing re-gathered).
    biggest = max(math.prod(shape[:-2]) for shape in shapes)
    assert biggest <= per_device[0] * per_device[1], (step, per_device, sorted(shapes))


def _train_step_memory_bench():
  """bench/train_step_memory.py, whose functions docs/parallelism.md's memory table comes from."""
  return load_script('bench/train_step_memory.py')


def test_train_step_memory_bench_measures_the_tokenizers_padded_vocabulary():
  """The bench takes the byte tokenizer's 259 ids (vocab_size 0), padded to 384 rows by
  model.vocab_multiple, as the trainer does; not a hand-rounded vocabulary from before padding."""
  model = _train_step_memory_bench().step_config().model
  assert model.vocab_size == 0 and model.vocab_multiple == 128


@pytest.mark.slow  # four compiles of a one-layer train step, ~25 s on an idle core
def test_attention_bytes_per_device_fall_as_one_over_the_model_axis():
  """The attention part of the train step's per-device memory, summed from the buffers of the
  compiled HLO shaped like scores and probabilities, falls as about 1/m on meshes (1, m): every
  such buffer holds exactly heads / m of the heads. Length 128 takes the blocked causal kernel
  that bench/train_step_memory.py measures (scores [B, H, 32, 32 .. 128] per query block). The
  sum is not exactly 1/m: XLA materializes a few of them more or fewer at some m."""
  bench = _train_step_memory_bench()
  attention = {}
  for m in (1, 2, 4, 8):
    config = bench.step_config((1, m))
    config.model.update(d_model=32, max_len=128, num_layers=1)
    config.sample_tokens = 0
    assert config.model.num_heads == HEADS
    tails = bench.score_tails(config.model)
    assert tails == {(32, 32), (32, 64), (32, 96), (32, 128)}
    buffers = bench.attention_buffers(bench.compiled_train_step(config).as_text(), tails)
    assert {shape[-2:] for _, shape in buffers} == tails, buffers
    assert all(math.prod(shape[:-2]) == BATCH * HEADS // m for _, shape in buffers), buffers
    attention[m] = bench.buffer_bytes(buffers)
  for m in (2, 4, 8):
    assert attention[m] < attention[m // 2], attention
    assert attention[m] <= 1.5 * attention[1] / m, attention
