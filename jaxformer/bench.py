"""Benchmark: train-step tokens/s and MFU, compile time, memory, eval/decode speed, input pipeline.

    python -m jaxformer.bench --config S [--steps 10] [--warmup 2] [--threads 1] \\
        [--only train,decode]

One JSON line per measurement on stdout, a readable table on stderr. Reported the way MaxText
reports performance: tokens/s (per device) and MFU = model FLOP/s / peak FLOP/s, where
    model FLOPs per token = jaxformer.models.flops_per_token(cfg, seq_len) = 6 N + 12 L d T
(N = non-embedding parameters + the output projection V d; PaLM appendix B) and the peak is the
dense-matmul FLOP/s of jnp.dot in the compute dtype, measured in the same process between the
train steps, so both see the same machine noise. `mfu_excl_lmhead` drops V d from N: the
convention of ../shared/bench/peers_bench.py, for side-by-side numbers.

Every measurement runs in a fresh process (`--worker`): compile time is a cold compile and peak
RSS (getrusage) belongs to that measurement alone.
  train          jitted make_train_step (AdamW, state donated) on synthetic batches: tokens/s
                 median/min/max after warm-up, MFU, compile time, peak RSS / device memory
  eval           make_eval_step (forward only) tokens/s
  decode         KV-cache `generate` vs `generate_recompute`, batch 1, 256 new tokens: the speedup
  pipeline       host seconds per batch of the real Shakespeare pipeline (build_task_data), and
                 its share of the train step time
  compile_depth  train-step compile time at 4 vs 24 layers (the default layout at each depth)
  remat_memory   peak RSS of a 24-layer train step with remat='full' vs remat='none'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from jaxformer.bench_models import CONFIGS, build_train, lm_batch, model_config, synthetic_batches

MEASUREMENTS = ('train', 'eval', 'decode', 'pipeline', 'compile_depth', 'remat_memory')
# Nominal dense bf16 peaks (FLOP/s) of accelerators, for MaxText-style MFU next to the measured one.
NOMINAL_PEAK = {
  'H100': 989e12,
  'H200': 989e12,
  'A100': 312e12,
  'L4': 121e12,
  'TPU v4': 275e12,
  'TPU v5 lite': 197e12,  # what jax calls a v5e chip (device_kind)
  'TPU v5e': 197e12,
  'TPU v5p': 459e12,
  'TPU v6 lite': 918e12,  # v6e (Trillium)
}


def _timed(fn):
  t = time.perf_counter()
  out = fn()
  return time.perf_counter() - t, out


def _memory() -> dict:
  """Peak RSS of this process, and the device's peak bytes where the backend reports them."""
  import jax

  out = {'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    out['peak_device_memory_mb'] = round(stats['peak_bytes_in_use'] / 2**20, 1)
  return out


def _spread(name: str, xs: list, nd: int = 1) -> dict:
  return {
    f'{name}_median': round(statistics.median(xs), nd),
    f'{name}_min': round(min(xs), nd),
    f'{name}_max': round(max(xs), nd),
  }


# ----- measurements (each runs in its own process) -------------------------------------------


def measure_train(cfg, steps, warmup, overrides, only_compile=False):
  import jax
  import jax.numpy as jnp

  from jaxformer.models import count_params, flops_per_token

  model, train_step, state = build_train(cfg, **overrides)
  batches = [jax.device_put(lm_batch(b)) for b in synthetic_batches(cfg)]
  t0 = time.perf_counter()
  lowered = train_step.lower(state, batches[0])
  t1 = time.perf_counter()
  step = lowered.compile()
  t2 = time.perf_counter()
  out = {
    'compile_s': round(t2 - t0, 2),
    'trace_lower_s': round(t1 - t0, 2),
    'xla_compile_s': round(t2 - t1, 2),
    'n_params': count_params(state['params']),
    'num_layers': model.cfg.num_layers,
    'remat': model.cfg.remat,
    'scan_layers': model.cfg.scan_layers,
  }
  run = lambda i, s: jax.block_until_ready(step(s, batches[i % len(batches)]))  # noqa: E731
  for i in range(warmup if not only_compile else 1):
    state, metrics = run(i, state)
  if only_compile:
    return dict(out, **_memory())
  # Matmul peak probes interleaved with the train steps: the same noise hits both.
  n, dtype = cfg['peak_n'], model.cfg.compute_dtype
  a = jax.random.normal(jax.random.key(1), (n, n), dtype)
  matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dtype))
  jax.block_until_ready(matmul(a, a))
  step_s, peak = [], []
  for i in range(steps):
    dt, (state, metrics) = _timed(lambda i=i, state=state: run(i, state))
    step_s.append(dt)
    peak.append(2 * n**3 / _timed(lambda: jax.block_until_ready(matmul(a, a)))[0])
  tokens = cfg['batch'] * cfg['block_size']
  tps = [tokens / s for s in step_s]
  fpt = flops_per_token(model.cfg, cfg['block_size'])
  fpt_excl = fpt - 6 * cfg['vocab'] * cfg['n_embd']
  peak_flops = statistics.median(peak)
  out.update(
    tokens_per_s=round(statistics.median(tps), 1),
    **_spread('tokens_per_s', tps),
    step_s_median=round(statistics.median(step_s), 4),
    tokens_per_step=tokens,
    steps_timed=steps,
    flops_per_token=fpt,
    flops_formula='6*(N_nonemb + V*d) + 12*L*d*T',
    matmul_peak_gflops=round(peak_flops / 1e9, 1),
    matmul_n=n,
    mfu=round(fpt * statistics.median(tps) / peak_flops, 4),
    mfu_min=round(fpt * min(tps) / peak_flops, 4),
    mfu_max=round(fpt * max(tps) / peak_flops, 4),
    mfu_excl_lmhead=round(fpt_excl * statistics.median(tps) / peak_flops, 4),
    loss=round(float(metrics['loss_sum'] / metrics['weight_sum']), 4),
  )
  kind = jax.devices()[0].device_kind
  nominal = next((v for k, v in NOMINAL_PEAK.items() if k.lower() in kind.lower()), None)
  if nominal and jax.default_backend() != 'cpu':
    out.update(
      nominal_peak_tflops=nominal / 1e12,
      mfu_vs_nominal=round(fpt * statistics.median(tps) / nominal, 4),
    )
  return dict(out, **_memory())


def measure_eval(cfg, steps, warmup, overrides):
  import jax
  from flax import linen as nn

  from jaxformer.models import DecoderLM
  from jaxformer.training.steps import make_eval_step

  model = DecoderLM(model_config(cfg, **overrides))
  x0 = jax.numpy.zeros((1, cfg['block_size']), jax.numpy.int32)
  params = nn.unbox(jax.jit(lambda k: model.init(k, x0)['params'])(jax.random.key(0)))
  batches = [jax.device_put(lm_batch(b)) for b in synthetic_batches(cfg)]
  step = jax.jit(make_eval_step(model, task='lm'))
  for i in range(max(warmup, 1)):
    jax.block_until_ready(step(params, batches[i % len(batches)]))
  times = [
    _timed(lambda i=i: jax.block_until_ready(step(params, batches[i % len(batches)])))[0]
    for i in range(steps)
  ]
  tokens = cfg['batch'] * cfg['block_size']
  tps = [tokens / t for t in times]
  return dict(
    tokens_per_s=round(statistics.median(tps), 1), **_spread('tokens_per_s', tps), **_memory()
  )


def measure_decode(cfg, steps, warmup, overrides):
  """Batch 1, a 16-token prompt, `new_tokens` greedy tokens; the first call of each compiles."""
  import jax
  from flax import linen as nn

  from jaxformer.decode import generate, generate_recompute
  from jaxformer.models import DecoderLM

  prompt_len, new = 16, cfg['new_tokens']
  model = DecoderLM(model_config(cfg, **dict(overrides, max_len=prompt_len + new)))
  prompt = jax.random.randint(jax.random.key(2), (1, prompt_len), 1, cfg['vocab'])
  params = nn.unbox(jax.jit(lambda k: model.init(k, prompt)['params'])(jax.random.key(0)))
  out = {'prompt_len': prompt_len, 'new_tokens': new, 'batch': 1}
  for name, fn in (('kv_cache', generate), ('recompute', generate_recompute)):

    def call(fn=fn):
      return jax.block_until_ready(
        fn(model, params, prompt, max_new_tokens=new, rng=jax.random.key(3), temperature=0.0)
      )

    first, _ = _timed(call)
    best = min(_timed(call)[0] for _ in range(2 if name == 'kv_cache' else 1))
    out[f'{name}_tokens_per_s'] = round(new / best, 1)
    out[f'{name}_first_call_s'] = round(first, 2)
  out['kv_cache_speedup'] = round(out['kv_cache_tokens_per_s'] / out['recompute_tokens_per_s'], 2)
  return dict(out, **_memory())


def measure_pipeline(cfg, steps, warmup, overrides):
  """Host time to produce (next) and place (device_put) one train batch of the real pipeline."""
  import jax

  from jaxformer.data import build_task_data

  dataset = dict(name='jaxformer_shakespeare', tokenizer='sentencepiece', vocab_size=cfg['vocab'])
  build_s, data = _timed(
    lambda: build_task_data(
      dataset, task='lm', max_len=cfg['block_size'], batch_size=cfg['batch'], seed=0
    )
  )
  it = data.train_iterator()
  for _ in range(max(warmup, 1)):
    next(it)
  times = [
    _timed(lambda: jax.block_until_ready(jax.device_put(next(it))))[0]
    for _ in range(max(steps, 20))
  ]
  return dict(
    build_s=round(build_s, 2), **_spread('host_ms_per_batch', [t * 1e3 for t in times], 3)
  )


WORKERS = {
  'train': measure_train,
  'eval': measure_eval,
  'decode': measure_decode,
  'pipeline': measure_pipeline,
}


# ----- driver ------------------------------------------------------------------------------------


def run_worker(config: str, name: str, args, **overrides) -> dict:
  """Runs one measurement in a fresh Python process; returns its JSON result."""
  cmd = [
    sys.executable,
    '-m',
    'jaxformer.bench',
    '--config',
    config,
    '--worker',
    name,
    '--steps',
    str(args.steps),
    '--warmup',
    str(args.warmup),
    '--overrides',
    json.dumps(dict(args.overrides, **overrides)),
  ]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
  if proc.returncode or not lines:
    raise RuntimeError(
      f'bench worker {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}'
    )
  return json.loads(lines[-1])


def run(args) -> list[dict]:
  cfg = CONFIGS[args.config]
  only = (
    cfg['default']
    if args.only == 'default'
    else MEASUREMENTS
    if args.only == 'all'
    else args.only.split(',')
  )
  unknown = set(only) - set(MEASUREMENTS)
  if unknown:
    raise SystemExit(
      f'--only: unknown measurement(s) {sorted(unknown)}; choose from {MEASUREMENTS}'
    )
  env = {
    'date': time.strftime('%Y-%m-%d %H:%M'),
    'cpus': len(os.sched_getaffinity(0)),
    'host': os.uname().nodename,
  }
  rows = []

  def emit(name, **row):
    row = dict(measurement=name, config=args.config, **row, env=env)
    print(json.dumps(row), flush=True)
    rows.append(row)

  for name in only:
    print(f'[bench] {name} ...', file=sys.stderr, flush=True)
    if name == 'compile_depth':
      r = {
        n: run_worker(args.config, 'compile', args, num_layers=n) for n in (4, 24)
      }  # the default layout at each depth (scan_layers='auto')
      emit(
        name,
        compile_s_4_layers=r[4]['compile_s'],
        compile_s_24_layers=r[24]['compile_s'],
        scan_layers_4_layers=r[4]['scan_layers'],
        scan_layers_24_layers=r[24]['scan_layers'],
        ratio_24_vs_4=round(r[24]['compile_s'] / r[4]['compile_s'], 2),
      )
    elif name == 'remat_memory':
      r = {
        m: run_worker(args.config, 'compile', args, num_layers=24, remat=m)
        for m in ('none', 'full')
      }
      emit(
        name,
        num_layers=24,
        peak_rss_mb_remat_none=r['none']['peak_rss_mb'],
        peak_rss_mb_remat_full=r['full']['peak_rss_mb'],
        ratio_full_vs_none=round(r['full']['peak_rss_mb'] / r['none']['peak_rss_mb'], 3),
      )
    else:
      row = run_worker(args.config, name, args)
      train = next((x for x in rows if x['measurement'] == 'train'), None)
      if name == 'pipeline' and train:
        row['train_step_ms_median'] = round(train['step_s_median'] * 1e3, 1)
        row['share_of_step'] = round(
          row['host_ms_per_batch_median'] / row['train_step_ms_median'], 6
        )
      emit(name, **row)
  print_table(rows)
  return rows


def print_table(rows: list[dict]) -> None:
  keys = (
    'tokens_per_s_median',
    'tokens_per_s_min',
    'tokens_per_s_max',
    'mfu',
    'mfu_excl_lmhead',
    'matmul_peak_gflops',
    'compile_s',
    'peak_rss_mb',
    'peak_device_memory_mb',
    'kv_cache_tokens_per_s',
    'recompute_tokens_per_s',
    'kv_cache_speedup',
    'host_ms_per_batch_median',
    'share_of_step',
    'compile_s_4_layers',
    'compile_s_24_layers',
    'ratio_24_vs_4',
    'peak_rss_mb_remat_none',
    'peak_rss_mb_remat_full',
    'ratio_full_vs_none',
  )
  print(f'\n{"measurement":<14} {"metric":<26} value', file=sys.stderr)
  for r in rows:
    for k in keys:
      if k in r:
        print(f'{r["measurement"]:<14} {k:<26} {r[k]}', file=sys.stderr)
  sys.stderr.flush()


def parse_args(argv=None) -> argparse.Namespace:
  """The command line, with --overrides and every --set FIELD=VALUE merged into args.overrides.

  Refuses (SystemExit 2) an unknown config, measurement or ModelConfig field, so a script's
  command line can be checked without running it.
  """
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--config', default='S', choices=sorted(CONFIGS))
  ap.add_argument('--steps', type=int, default=10, help='timed steps (after warm-up)')
  ap.add_argument('--warmup', type=int, default=2, help='untimed steps after compilation')
  ap.add_argument(
    '--threads',
    type=int,
    default=None,
    help='pin to the first N CPUs (XLA:CPU obeys affinity only)',
  )
  ap.add_argument(
    '--only', default='default', help=f"comma list of {MEASUREMENTS}, 'all' or 'default'"
  )
  ap.add_argument(
    '--set',
    action='append',
    default=[],
    metavar='FIELD=VALUE',
    help='override a ModelConfig field, e.g. --set remat=full --set attention_impl=einsum',
  )
  ap.add_argument('--worker', help=argparse.SUPPRESS)
  ap.add_argument('--overrides', default='{}', help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  args.overrides = json.loads(args.overrides)
  for item in args.set:
    key, _, value = item.partition('=')
    args.overrides[key] = (
      json.loads(value) if value[:1].isdigit() or value in ('true', 'false') else value
    )
  if args.only not in ('default', 'all'):
    unknown = set(args.only.split(',')) - set(MEASUREMENTS)
    if unknown:
      ap.error(f'--only: unknown measurement(s) {sorted(unknown)}; choose from {MEASUREMENTS}')
  try:
    model_config(CONFIGS[args.config], **args.overrides)
  except (TypeError, ValueError) as e:
    ap.error(f'--set: {e}')
  from jaxformer.config import ModelConfig

  unknown = sorted(set(args.overrides) - set(ModelConfig.__dataclass_fields__))
  if unknown:
    ap.error(f'--set: ModelConfig has no field(s) {unknown}')
  return args


def main(argv=None):
  args = parse_args(argv)
  if args.threads:
    # Must happen before jax creates its CPU client; worker processes inherit the affinity.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
  if args.worker:
    cfg = CONFIGS[args.config]
    if args.worker == 'compile':
      result = measure_train(cfg, args.steps, args.warmup, args.overrides, only_compile=True)
    else:
      result = WORKERS[args.worker](cfg, args.steps, args.warmup, args.overrides)
    print(json.dumps(result), flush=True)
    return
  run(args)


if __name__ == '__main__':
  main()
