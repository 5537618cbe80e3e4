"""Config S's train step with and without jaxformer.host_memory's malloc settings.

    taskset -c 0 python -m bench.host_memory [--rounds 2] [--steps 5]
    python -m bench.host_memory --compiled [--rounds 2] [--steps 100]

Each measurement is a fresh process (the settings must precede jax), alternating on/off; it
prints process CPU seconds, minor page faults and system seconds per step (medians over the steps
after a warm-up) and the last loss, which must not depend on the settings.

--compiled compares, with the settings on, the default LM's train step (its shape; the benchmark's
optimizer) compiled in the process against the same program loaded from the compilation cache (a
fresh cache directory per round, filled by the compiling process), on all the cores the process may
use. Each line gives tokens/s (median step after 10), and per step the CPU seconds, minor page
faults and voluntary context switches (a thread that blocks, on a lock or for want of work), summed
over the process's threads and averaged over the same steps, whether the settings applied, and the
programs read from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from jaxformer.host_memory import ENV

WORKER = """
import json, resource, statistics, sys, time
import jaxformer
import jax
from jaxformer.bench_models import CONFIGS, build_train, lm_batch, synthetic_batches

cfg = CONFIGS['S']
_, step, state = build_train(cfg, 0)
data = [jax.device_put(lm_batch(b)) for b in synthetic_batches(cfg)]
step = step.lower(state, data[0]).compile()
rows = []
for i in range(int(sys.argv[1]) + 1):  # the first step warms up
  r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
  state, metrics = step(state, data[i % len(data)])
  jax.block_until_ready(state)
  r1 = resource.getrusage(resource.RUSAGE_SELF)
  rows.append((time.process_time() - t0, r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime))
cpu, faults, system = (statistics.median(col) for col in zip(*rows[1:]))
print(json.dumps(dict(
  settings=jaxformer.host_memory.keep_freed_memory(), cpu_s_per_step=round(cpu, 3),
  minor_faults_per_step=int(faults), system_s_per_step=round(system, 3),
  loss=float(metrics['loss_sum'] / metrics['weight_sum']))))
"""


# argv: compilation cache directory, timed steps. The default LM's shape with the benchmark's
# optimizer (bench_models.optimizer_config), synthetic tokens.
COMPILED_WORKER = """
import json, resource, statistics, sys, time
import jaxformer
import jax
import numpy as np
from jaxformer.bench_models import build_train, lm_batch
from jaxformer.configs import shakespeare_lm
from jaxformer.training import compile_cache

compile_cache.enable(sys.argv[1])  # as train.py does, under the given root
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
c = shakespeare_lm.get_config()
m = c.model
cfg = dict(vocab=c.dataset.vocab_size, n_layer=m.num_layers, n_head=m.num_heads,
           n_embd=m.d_model, block_size=m.max_len, batch=c.batch_size, dropout=m.dropout_rate)
_, step, state = build_train(cfg, 0, activation=m.activation, d_ff=m.d_ff,
                             position=m.position, scan_layers=m.scan_layers)
rng = np.random.default_rng(0)
data = [jax.device_put(lm_batch(rng.integers(0, cfg['vocab'], (cfg['batch'], cfg['block_size'] + 1),
                                            dtype=np.int32))) for _ in range(4)]
walls = []
for i in range(int(sys.argv[2]) + 10):  # the first 10 steps warm up
  if i == 10:
    r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
  t = time.perf_counter()
  state, metrics = step(state, data[i % len(data)])
  jax.block_until_ready(state)
  walls.append(time.perf_counter() - t)
r1, n = resource.getrusage(resource.RUSAGE_SELF), len(walls) - 10
print(json.dumps(dict(
  settings=jaxformer.host_memory.keep_freed_memory(),
  tokens_per_s=round(cfg['batch'] * cfg['block_size'] / statistics.median(walls[10:])),
  first_step_s=round(walls[0], 2), cpu_s_per_step=round((time.process_time() - c0) / n, 4),
  minor_faults_per_step=round((r1.ru_minflt - r0.ru_minflt) / n),
  voluntary_switches_per_step=round((r1.ru_nvcsw - r0.ru_nvcsw) / n),
  cache_hits=events.count('/jax/compilation_cache/cache_hits'),
  loss=float(metrics['loss_sum'] / metrics['weight_sum']))))
"""


def compiled(rounds: int, steps: int) -> None:
  """Per round: a process that compiles into an empty cache, then one that loads from it (always
  in that order, so a drift of the machine's speed within a round favours one side)."""
  for _ in range(rounds):
    with tempfile.TemporaryDirectory(prefix='jaxformer-xla-') as cache:
      for where in ('compiled in the process', 'loaded from the cache'):
        out = subprocess.run(
          [sys.executable, '-c', COMPILED_WORKER, cache, str(steps)],
          env={**os.environ, ENV: '1'},
          capture_output=True,
          text=True,
        )
        if out.returncode != 0:
          sys.exit(f'the {where!r} process failed:\n{out.stderr[-3000:]}')
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps({'program': where, **row}), flush=True)


def _positive(text: str) -> int:
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f'{text!r} is not a positive whole number')
  return int(text)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog='python -m bench.host_memory', description=__doc__.split('\n')[0]
  )
  p.add_argument(
    '--rounds', type=int, default=2, help='pairs of fresh processes (on/off, or compiled/loaded)'
  )
  p.add_argument(
    '--steps', type=_positive, default=None, help='timed steps per process (5; --compiled: 100)'
  )
  p.add_argument(
    '--compiled', action='store_true', help='compiled in the process vs loaded from the cache'
  )
  args = p.parse_args(argv)
  if args.compiled:
    compiled(args.rounds, args.steps or 100)
    return 0
  args.steps = args.steps or 5
  for _ in range(args.rounds):
    for keep in ('1', '0'):
      env = {**os.environ, ENV: keep}
      out = subprocess.run(
        [sys.executable, '-c', WORKER, str(args.steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
      )
      print(out.stdout.strip().splitlines()[-1], flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
