"""Sequence packing on number words en_de: the same run with dataset.pack off and on.

    python -m bench.packing --runs /tmp/packing --only off
    python -m bench.packing --runs /tmp/packing --only on --same_examples
    python -m bench.packing --runs /tmp/packing --throughput_rounds 10

--same_examples divides the packed run's step counts (steps, warmup, evaluations, checkpoints,
--check_every) by the pairs per packed row, so both runs follow one schedule in examples seen.
--throughput_rounds times train steps of both alternately in one process instead of training
(see interleaved_throughput): the fair tokens/s ratio on a shared machine.

Each run trains configs/numbers_translate.py in-process with one callback that, every
`check_every` steps, decodes the whole test split greedily and records its exact match with the
wall time and the examples seen so far. The callback's own decoding time is subtracted from the
wall time, so the clock measures training (steps, the run's own validations and checkpoints).
Prints and writes <runs>/packing.json: fill (non-padding share of the train positions, from
metrics.jsonl), real and padded tokens/s (summary.json), final test exact match, and the first
check at >= 99% test exact match. Records the 1-minute load average at the start and end of
each run: the machine may be shared, so compare tokens/s only between back-to-back runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import jax
import numpy as np
from jaxformer.configs import numbers_translate

from jaxformer import decode, metrics
from jaxformer.config import ModelConfig
from jaxformer.data import build_task_data, load_tokenizer
from jaxformer.data.tokenizers import decode_rows
from jaxformer.models import build_model
from jaxformer.training import train_and_evaluate
from jaxformer.training.writers import read_metrics

TARGET = 0.99


class TestExactMatch:
  """Greedy exact match on the test split every `every` steps, timed without its own cost."""

  name = 'test_exact_match_probe'

  def __init__(self, config, workdir: str, every: int, rows_per_step):
    self.config, self.workdir, self.every = config, workdir, every
    self.rows_per_step = rows_per_step  # step -> examples seen up to that step
    self.timeline: list[dict] = []
    self.excluded = 0.0  # seconds spent decoding here
    self._ready = False

  def on_train_start(self, step: int) -> None:
    self.t0 = time.time()

  def _prepare(self) -> None:
    with open(os.path.join(self.workdir, 'config.json')) as f:
      resolved = json.load(f)
    self.tok = load_tokenizer(os.path.join(self.workdir, 'tokenizer'))
    self.cfg = ModelConfig(**resolved['model'])
    self.model = build_model('translate', self.cfg, 0, resolved.get('pooling', 'mean'))
    data = build_task_data(
      self.config.dataset,
      task='translate',
      max_len=self.cfg.max_len,
      batch_size=500,
      seed=int(self.config.seed),
      tokenizer=self.tok,
    )
    self.sources = [np.asarray(b['inputs']) for b in data.eval_batches('test', 500)]
    self.references = [e['target'] for e in data.examples('test')]
    self._ready = True

  def on_step(self, step: int, state) -> None:
    if step % self.every:
      return
    params = jax.block_until_ready(state['params'])  # the steps so far have really run
    wall = time.time() - self.t0 - self.excluded
    start = time.time()
    if not self._ready:
      self._prepare()
    hyps = []
    for src in self.sources:
      out = decode.translate_greedy(
        self.model,
        params,
        src,
        max_len=self.cfg.max_len,
        bos_id=self.tok.bos_id,
        eos_id=self.tok.eos_id,
        num_tokens=self.tok.vocab_size,  # never a padding id of the sharded vocabulary
      )
      hyps += decode_rows(self.tok, jax.device_get(out))
    exact = metrics.exact_match(hyps[: len(self.references)], self.references)
    self.excluded += time.time() - start
    self.timeline.append(
      {
        'step': step,
        'wall_s': round(wall, 1),
        'examples': self.rows_per_step(step),
        'exact': exact,
      }
    )
    print(f'  step {step}: test exact match {exact:.3f} at {wall:.0f} s', flush=True)


def one_run(runs: str, pack: bool, steps: int, every: int, same_examples: bool) -> dict:
  config = numbers_translate.get_config()
  config.dataset.pack = pack
  config.num_train_steps = steps
  config.progress = False
  workdir = os.path.join(runs, 'pack' if pack else 'nopack')
  shutil.rmtree(workdir, ignore_errors=True)
  data = build_task_data(
    config.dataset,
    task='translate',
    max_len=int(config.model.max_len),
    batch_size=int(config.batch_size),
    seed=int(config.seed),
  )
  rows = len(data.train_indices())
  pairs = data.source.num_examples(data.splits['train'])
  per_row = pairs / rows  # examples per train row
  if same_examples:  # the unpacked schedule in examples: every step count shrinks by per_row
    for key in ('num_train_steps', 'warmup_steps', 'eval_every_steps', 'checkpoint_every_steps'):
      config[key] = max(1, round(config[key] / per_row))
    every = max(1, round(every / per_row))
  probe = TestExactMatch(config, workdir, every, lambda s: round(s * config.batch_size * per_row))
  load_start = os.getloadavg()[0]
  summary = train_and_evaluate(config, workdir, callbacks=[probe])
  load_end = os.getloadavg()[0]
  train_rows = [r for r in read_metrics(workdir) if r['split'] == 'train']
  fill = [r['tokens_per_s'] / r['padded_tokens_per_s'] for r in train_rows]
  reached = next((t for t in probe.timeline if t['exact'] >= TARGET), None)
  return {
    'pack': pack,
    'config_steps': {k: int(config[k]) for k in ('num_train_steps', 'warmup_steps')},
    'train_rows': rows,
    'train_pairs': pairs,
    'examples_per_row': per_row,
    'fill': float(np.mean(fill)),
    'tokens_per_s': summary['tokens_per_s'],
    'padded_tokens_per_s': summary['padded_tokens_per_s'],
    'wall_s': summary['wall_s'],
    'probe_s': round(probe.excluded, 1),
    'steps': summary['last_step'],
    'test_exact_match_greedy_final': probe.timeline[-1]['exact'] if probe.timeline else None,
    'final_report': summary.get('test'),
    'reached_99': reached,
    'timeline': probe.timeline,
    'load_1min_start': load_start,
    'load_1min_end': load_end,
  }


def interleaved_throughput(rounds: int, steps: int) -> dict:
  """Train steps of the unpacked and the packed run alternately in one process (`steps` of each
  per round, on the same 8 batches of each, cycled): a load that comes and goes slows both alike,
  unlike two runs one after the other. Returns rows/s, fill and real tokens/s of each."""
  import tempfile

  from jaxformer.training.prepare import compiled_steps, prepare

  runs = {}
  for pack in (False, True):
    config = numbers_translate.get_config()
    config.dataset.pack = pack
    s = prepare(config, os.path.join(tempfile.mkdtemp(), 'unused'))  # writes nothing
    train_step, _ = compiled_steps(s)
    state = s.runtime.jit_init(s.make_state, s.shardings)(jax.random.key(0), jax.random.key(1))
    it = s.data.train_iterator()
    host = [next(it) for _ in range(8)]
    real = [float(np.sum(b['inputs'] != 0) + np.sum(b['weights'] > 0)) for b in host]
    batches = [s.runtime.put_batch(b) for b in host]
    state = s.runtime.from_canonical(state)
    state, _ = train_step(state, batches[0])  # compile
    jax.block_until_ready(state)
    positions = 2 * int(config.model.max_len) * int(config.batch_size)
    runs[pack] = dict(step=train_step, state=state, batches=batches, real=real, seconds=0.0,
                      tokens=0.0, steps=0, positions=positions)  # fmt: skip
  for r in range(rounds):
    for pack in (False, True) if r % 2 == 0 else (True, False):
      run = runs[pack]
      start = time.time()
      for i in range(steps):
        b = (run['steps'] + i) % len(run['batches'])
        run['state'], _ = run['step'](run['state'], run['batches'][b])
        run['tokens'] += run['real'][b]
      jax.block_until_ready(run['state'])
      run['seconds'] += time.time() - start
      run['steps'] += steps
  out = {}
  for pack, run in runs.items():
    out['on' if pack else 'off'] = {
      'steps': run['steps'],
      'seconds': round(run['seconds'], 1),
      'tokens_per_s': run['tokens'] / run['seconds'],
      'padded_tokens_per_s': run['steps'] * run['positions'] / run['seconds'],
      'fill': run['tokens'] / (run['steps'] * run['positions']),
    }
  return out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--runs', required=True, help='directory for the two workdirs and packing.json')
  p.add_argument('--steps', type=int, default=700)
  p.add_argument('--check_every', type=int, default=25)
  p.add_argument('--only', choices=('off', 'on'), default=None)
  p.add_argument(
    '--throughput_rounds',
    type=int,
    default=0,
    help='instead of training: this many rounds of interleaved train steps, off and on',
  )
  p.add_argument(
    '--same_examples',
    action='store_true',
    help='packed run: divide every step count by the examples per packed row',
  )
  args = p.parse_args()
  os.makedirs(args.runs, exist_ok=True)
  out = os.path.join(args.runs, 'packing.json')
  results = json.load(open(out)) if os.path.exists(out) else {}
  if args.throughput_rounds:
    load_start = os.getloadavg()[0]
    results['interleaved'] = interleaved_throughput(args.throughput_rounds, 5)
    results['interleaved']['load_1min'] = [load_start, os.getloadavg()[0]]
    with open(out, 'w') as f:
      json.dump(results, f, indent=1)
    print(json.dumps(results['interleaved'], indent=1))
    return
  for pack in (False, True):
    key = 'on' if pack else 'off'
    if args.only in (None, key):
      results[key] = one_run(args.runs, pack, args.steps, args.check_every, args.same_examples)
      with open(out, 'w') as f:
        json.dump(results, f, indent=1)
  for key, r in results.items():
    print(key, {k: v for k, v in r.items() if k not in ('timeline', 'final_report')})


if __name__ == '__main__':
  main()
