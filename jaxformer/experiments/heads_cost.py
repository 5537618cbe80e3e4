"""heads_cost: does splitting d_model into more heads cost more? FLOPs, then measured time and
memory.

At fixed d_model = d, H heads of size K = d / H. Per layer, forward, for B sequences of length L:

    projections   q, k, v and out: four [d, H*K] = [d, d] matmuls     4 * 2 B L d^2
    scores        q_h k_h^T for every head:   H * 2 B L^2 K          = 2 B L^2 d
    mixing        p_h v_h for every head:     H * 2 B L^2 K          = 2 B L^2 d
    softmax       exp, sum, divide on H score matrices             ~ 5 B H L^2 elementwise ops
    saved for the backward pass: the probabilities, B H L^2 floats per layer

Because H * K = d, every matmul term is independent of H: the heads split one big matmul into
H smaller ones. What grows with H is the softmax work and the [B, H, L, L] score/probability
tensors (memory). A train step runs the matmuls three times (forward, and twice as many
FLOPs backward), so matmul FLOPs per step = 3 * layers * (8 B L d^2 + 4 B L^2 d).
"""

from __future__ import annotations

import time

import numpy as np

from jaxformer.experiments.common import Options, Result, numpy_init, pct

QUESTION = (
  "Multi-head attention computes heads in parallel, but isn't its time complexity the same "
  "as one head's?"
)


def analytic_cost(
  d_model: int, seq_len: int, batch: int, num_heads: int, num_layers: int = 1
) -> dict:
  """Exact integer counts for one train step's attention sublayers (see the module docstring)."""
  if d_model % num_heads:
    raise ValueError(f'd_model={d_model} is not divisible by num_heads={num_heads}: pick a divisor')
  head_dim = d_model // num_heads
  b, length, d, h = batch, seq_len, d_model, num_heads
  projections = 4 * 2 * b * length * d * d
  scores = h * 2 * b * length * length * head_dim
  mixing = h * 2 * b * length * length * head_dim
  return {
    'projection_flops': 3 * num_layers * projections,  # train step = 3x forward
    'score_flops': 3 * num_layers * (scores + mixing),
    'matmul_flops': 3 * num_layers * (projections + scores + mixing),
    'softmax_elements': num_layers * b * h * length * length,  # forward; each has ~5 ops
    'probability_bytes': num_layers * b * h * length * length * 4,  # float32, kept for backward
  }


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'd_model': 64,
      'num_layers': 1,
      'seq_lens': [32, 64],
      'heads': [1, 4],
      'tokens_per_step': 256,
      'repeats': 2,
      'vocab_size': 256,
    }
  return {
    'd_model': 256,
    'num_layers': 2,
    'seq_lens': [128, 512],
    'heads': [1, 2, 4, 8, 16],
    'tokens_per_step': 4096,
    'repeats': 6,
    'vocab_size': 256,
  }


def _compiled_step(d_model, num_heads, num_layers, seq_len, batch, vocab_size):
  """(jitted train step, state, batch, compiled) for a DecoderLM of these sizes (library train
  step)."""
  import jax
  import jax.numpy as jnp
  import optax

  from jaxformer.config import ModelConfig
  from jaxformer.models import DecoderLM
  from jaxformer.training.steps import make_train_step

  cfg = ModelConfig(
    vocab_size=vocab_size,
    d_model=d_model,
    num_heads=num_heads,
    num_layers=num_layers,
    max_len=seq_len,
    dropout_rate=0.0,
    dtype='float32',
  )
  model = DecoderLM(cfg)
  tokens = jnp.asarray(
    np.random.default_rng(0).integers(1, vocab_size, (batch, seq_len)), jnp.int32
  )
  params = numpy_init(model, tokens[:1])
  tx = optax.adamw(1e-3)
  state = {
    'step': jnp.zeros((), jnp.int32),
    'params': params,
    'opt_state': tx.init(params),
    'rng': jax.random.key(1),
  }
  batch_arrays = {
    'inputs': tokens,
    'targets': jnp.roll(tokens, -1, axis=1),
    'weights': jnp.ones(tokens.shape),
  }
  step = jax.jit(make_train_step(model, tx, task='lm'))
  compiled = step.lower(state, batch_arrays).compile()
  return compiled, state, batch_arrays


def _memory_and_flops(compiled) -> tuple[int, int, float]:
  """(XLA temp bytes, args + outputs + temps - aliased bytes, XLA cost_analysis FLOPs).

  The FLOP count is XLA's own estimate, kept as raw data only: on CPU it misses the matmuls
  XLA hands to its runtime library, so it is far below the formula.
  """
  mem = compiled.memory_analysis()
  temp = int(getattr(mem, 'temp_size_in_bytes', 0))
  peak = (
    temp
    + int(getattr(mem, 'argument_size_in_bytes', 0))
    + int(getattr(mem, 'output_size_in_bytes', 0))
    - int(getattr(mem, 'alias_size_in_bytes', 0))
  )
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return temp, peak, float((cost or {}).get('flops', float('nan')))


def run(opts: Options) -> Result:
  import jax

  s = _settings(opts.quick)
  cases = [(length, h) for length in s['seq_lens'] for h in s['heads']]
  compiled = {}
  rows = {}
  for length, h in cases:
    batch = s['tokens_per_step'] // length
    fn, state, batch_arrays = _compiled_step(
      s['d_model'], h, s['num_layers'], length, batch, s['vocab_size']
    )
    state, _ = fn(state, batch_arrays)  # warm-up: first run touches every buffer
    jax.block_until_ready(state)
    compiled[(length, h)] = [fn, state, batch_arrays]
    temp, peak, xla_flops = _memory_and_flops(fn)
    rows[(length, h)] = {
      'seq_len': length,
      'heads': h,
      'batch': batch,
      'head_dim': s['d_model'] // h,
      **analytic_cost(s['d_model'], length, batch, h, s['num_layers']),
      'xla_cost_analysis_flops': xla_flops,
      'xla_temp_bytes': temp,
      'xla_total_bytes': peak,
      'times_s': [],
    }
  # Round-robin timing: every case is measured once per round, so a burst of load from other
  # processes on this shared machine hits all head counts alike instead of one of them.
  for _ in range(s['repeats']):
    for case in cases:
      fn, state, batch_arrays = compiled[case]
      start = time.perf_counter()
      state, _ = fn(state, batch_arrays)
      jax.block_until_ready(state)
      rows[case]['times_s'].append(time.perf_counter() - start)
      compiled[case][1] = state
  for row in rows.values():
    row['median_step_s'] = float(np.median(row['times_s']))
    row['tokens_per_s'] = s['tokens_per_step'] / row['median_step_s']
  table = [rows[c] for c in cases]
  return Result(
    settings=s,
    results={'rows': table, 'formula': __doc__.split('\n\n')[1]},
    answer=_answer(s, rows),
    figures={'': _figure(s, rows)},
  )


def _flops(x: float) -> str:
  return f'{x / 1e9:.2f} GFLOP' if x >= 1e9 else f'{x / 1e6:.1f} MFLOP'


def _answer(s, rows) -> str:
  lo, hi = s['heads'][0], s['heads'][-1]
  lines = []
  for length in s['seq_lens']:
    a, b = rows[(length, lo)], rows[(length, hi)]
    equal = len({rows[(length, h)]['matmul_flops'] for h in s['heads']}) == 1
    lines.append(
      f'- L={length}: attention matmul FLOPs per train step are {_flops(a["matmul_flops"])} '
      'for every head count '
      f'({"identical" if equal else "NOT identical"}; projections {_flops(a["projection_flops"])}, '
      f'scores+mixing {_flops(a["score_flops"])}). '
      f'From {lo} to {hi} heads the measured step time goes '
      f'{a["median_step_s"] * 1e3:.0f} -> {b["median_step_s"] * 1e3:.0f} ms '
      f'({pct(b["median_step_s"], a["median_step_s"])}), '
      f"XLA's temporary buffers {a['xla_temp_bytes'] / 2**20:.1f} -> "
      f'{b["xla_temp_bytes"] / 2**20:.1f} MiB, and the '
      f'softmax handles {a["softmax_elements"]:,} -> {b["softmax_elements"]:,} scores per step.'
    )
  return (
    'The matmul FLOPs do not depend on the number of heads (H * head_dim = d_model: H smaller '
    'matmuls replace one big one). What grows linearly with H is the softmax work and the '
    '[B, H, L, L] score and probability tensors; '
    'what shrinks is each matmul (head_dim = d_model / H). '
    'Measured (median of the timed steps):\n\n' + '\n'.join(lines)
  )


def _figure(s, rows):
  from jaxformer import plotting

  fig = plotting.figure(figsize=(14, 4))
  axes = fig.subplots(1, 3)
  heads = s['heads']
  softmax_axis = axes[0].twinx()
  softmax_axis.set_ylabel('softmax scores per step (millions, dashed)')
  for length in s['seq_lens']:
    r = [rows[(length, h)] for h in heads]
    (line,) = axes[0].plot(
      heads, [x['matmul_flops'] / 1e9 for x in r], marker='o', label=f'matmul GFLOP, L={length}'
    )
    softmax_axis.plot(
      heads,
      [x['softmax_elements'] / 1e6 for x in r],
      marker='x',
      ls='--',
      color=line.get_color(),
      label=f'softmax scores (M), L={length}',
    )
    axes[1].plot(heads, [x['median_step_s'] * 1e3 for x in r], marker='o', label=f'L={length}')
    axes[1].fill_between(
      heads, [min(x['times_s']) * 1e3 for x in r], [max(x['times_s']) * 1e3 for x in r], alpha=0.2
    )
    (line,) = axes[2].plot(
      heads,
      [x['xla_temp_bytes'] / 2**20 for x in r],
      marker='o',
      label=f'XLA temp buffers, L={length}',
    )
    axes[2].plot(
      heads,
      [x['probability_bytes'] / 2**20 for x in r],
      marker='x',
      ls='--',
      color=line.get_color(),
      label=f'attention probabilities, L={length}',
    )
  titles = [
    'attention per train step: matmul GFLOP (solid) vs softmax size',
    'measured train step (ms; band = min..max)',
    'memory (MiB)',
  ]
  for ax, title in zip(axes, titles):
    ax.set_xscale('log', base=2)
    ax.set_xticks(heads, [str(h) for h in heads])
    ax.set_xlabel(f'heads (d_model={s["d_model"]} fixed)')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  axes[0].set_ylim(bottom=0)
  softmax_axis.set_ylim(bottom=0)
  softmax_axis.legend(fontsize=7, loc='center right')
  fig.suptitle(
    f'{s["num_layers"]}-layer DecoderLM, {s["tokens_per_step"]} tokens per step', fontsize=10
  )
  return fig
