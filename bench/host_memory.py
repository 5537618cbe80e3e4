"""Config S's train step with and without jaxformer.host_memory's malloc settings.

    taskset -c 0 python -m bench.host_memory [--rounds 2] [--steps 5]

Each measurement is a fresh process (the settings must precede jax), alternating on/off; it
prints process CPU seconds, minor page faults and system seconds per step (medians over the steps
after a warm-up) and the last loss, which must not depend on the settings.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

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


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog='python -m bench.host_memory', description=__doc__.split('\n')[0]
  )
  p.add_argument('--rounds', type=int, default=2, help='on/off pairs, each in fresh processes')
  p.add_argument('--steps', type=int, default=5, help='timed steps per process')
  args = p.parse_args(argv)
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
