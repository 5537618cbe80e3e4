"""Trains and evaluates the three embedded tasks and writes docs/results.{json,md}.

    python -m bench.quality                    # everything (about 10 hours on a 2-core CPU)
    python -m bench.quality --only numbers     # one part (or several, comma-separated):
                                               # numbers | systematic | unseen_pairs |
                                               # unseen_pairs_bytes | lm | genre |
                                               # genre_seeds | genre_settings | peft |
                                               # levers
    python -m bench.quality --only genre_settings_second_lm --second_lm DIR
                                               # the fine-tuning settings from another run of
                                               # the default LM (read, never written)

Run it from the repository root (train.py runs there). It stops with exit code 2 before any part
runs if a part name is unknown, or if --pretrained holds a run it did not make (such as the
Quickstart's runs/shakespeare_lm): it deletes only directories it made.

Each part trains through train.py (a subprocess, exactly what a user runs), scores with
jaxformer.evaluate, and records wall time. Baselines: a unigram LM (bits per byte) and
TF-IDF + logistic regression for genres (scikit-learn, needed here only).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import time

from bench import quality_levers
from bench.quality_format import measured_before
from bench.quality_genre import (
  SECOND_LM_SETTINGS,
  genre,
  genre_seeds,
  genre_settings,
  peft,
)
from bench.quality_report import write_markdown
from bench.quality_runs import (
  DOCS,
  REPO,
  evaluate,
  refuse_foreign,
  train,
  usage_error,
  val_rows,
)


# ----------------------------------------------------------------------------- numbers
def numbers(runs: str, pairs=('en_de', 'en_fr'), out=None) -> dict:
  out = dict(out or {})
  for pair in pairs:
    workdir = os.path.join(runs, f'numbers_{pair}')
    summary = train(
      workdir,
      'configs/numbers_translate.py',
      f'--config.dataset.name=jaxformer_numbers/{pair}',
      fresh=False,
    )  # an interrupted run resumes exactly
    result = evaluate(workdir, 'test', beam_size=4)
    out[pair] = {
      'exact_match_greedy': result['exact_match_greedy'],
      'exact_match_beam': result['exact_match_beam'],
      'bleu_beam': result['bleu_beam'],
      'test_examples': result['num_examples'],
      'train_wall_s': summary['wall_s'],
      'load': summary['load'],
      'steps': summary['last_step'],
      'examples': result['examples'][:3],
    }
  return out


# ----------------------------------------------------------------------------- systematic splits
# The shipped config and two variants, one change each (slug: label, overrides).
SYSTEMATIC_VARIANTS = {
  'shipped': ('{config} (3+3 layers, dropout 0.1)', ()),
  'depth_1': (
    'one encoder and one decoder layer',
    ('--config.model.num_encoder_layers=1', '--config.model.num_decoder_layers=1'),
  ),
  'dropout_0.3': ('dropout 0.3', ('--config.model.dropout_rate=0.3',)),
}
# results.json key: (config, workdir prefix); the holdouts are jaxformer.data.numbers.HOLDOUTS.
SYSTEMATIC_SPLITS = {
  'numbers_systematic': ('configs/numbers_systematic.py', 'numbers_systematic'),
  'numbers_unseen_pairs': ('configs/numbers_unseen_pairs.py', 'numbers_unseen_pairs'),
  'numbers_unseen_pairs_bytes': (
    'configs/numbers_unseen_pairs_bytes.py',
    'numbers_unseen_pairs_bytes',
  ),
}


def systematic_numbers(runs: str, key: str = 'numbers_systematic', out=None) -> dict:
  """en_de with a systematic holdout (SYSTEMATIC_SPLITS): exact match on the held-out numbers
  (test) and on numbers like the training ones (test_iid), per variant."""
  config, prefix = SYSTEMATIC_SPLITS[key]
  out = dict(out or {})
  for slug, (label, overrides) in SYSTEMATIC_VARIANTS.items():
    workdir = os.path.join(runs, f'{prefix}_{slug}')
    summary = train(workdir, config, *overrides, fresh=False)
    row = {'label': label.format(config=config), 'overrides': list(overrides)}
    for split in ('test', 'test_iid'):
      result = evaluate(workdir, split, beam_size=4)
      row[split] = {
        'exact_match_greedy': result['exact_match_greedy'],
        'exact_match_beam': result['exact_match_beam'],
        'examples': result['num_examples'],
        'errors': result['errors'][:3],
      }
    row.update(train_wall_s=summary['wall_s'], load=summary['load'], steps=summary['last_step'])
    out[slug] = row
  return out


# ----------------------------------------------------------------------------- language model
def unigram_bits_per_byte(data) -> float:
  """Cross-entropy of the validation tokens under the train split's add-one unigram, per byte."""
  import numpy as np

  from jaxformer.metrics import bits_per_byte

  train = np.asarray(data.encoded(data.splits['train']).tokens.values)
  val = np.asarray(data.encoded(data.splits['eval']).tokens.values)
  counts = np.bincount(train, minlength=data.tokenizer.vocab_size) + 1.0
  logp = np.log(counts / counts.sum())
  nats = -float(np.sum(logp[val[1:]]))
  return bits_per_byte(nats, data.scored_bytes(data.splits['eval']))


def bpb_at(rows: list[dict], seconds: float) -> float | None:
  """Validation bits/byte of the last evaluation that finished within `seconds` of the start."""
  done = [r for r in rows if r.get('elapsed_s', math.inf) <= seconds]
  return done[-1]['bits_per_byte'] if done else None


# The default LM (`python train.py`), keeping a checkpoint every 100 steps so that
# `python -m jaxformer.experiments heads_dynamics --workdir runs/quality/shakespeare_lm` can follow
# its heads through training; the kept history changes no weight or metric.
DEFAULT_LM = ('configs/shakespeare_lm.py', '--config.keep_every_steps=100')


def long_language_model(runs: str) -> tuple[str, dict]:
  """The long LM: the default LM config at twice its steps, trained once, then reused."""
  from jaxformer.configs import shakespeare_lm

  workdir = os.path.join(runs, 'shakespeare_lm_30min')
  steps = 2 * shakespeare_lm.get_config().num_train_steps
  return workdir, train(
    workdir, 'configs/shakespeare_lm.py', f'--config.num_train_steps={steps}', fresh=False
  )


def language_model(runs: str, default_workdir: str, long_run: bool = True) -> dict:
  """The default config's run, and the long run: the same config at twice the steps."""
  from jaxformer.configs import shakespeare_lm

  from jaxformer.data import build_task_data

  def run_record(workdir, summary):
    rows = val_rows(workdir)
    full = evaluate(workdir, 'validation')
    return {
      'wall_s': summary['wall_s'],
      'steps': summary['last_step'],
      'load': summary['load'],
      'tokens_per_s': summary['tokens_per_s'],
      'val_bits_per_byte_full_split': full['bits_per_byte'],
      'val_loss_full_split': full['loss'],
      'bpb_at': {
        f'{m}min': bpb_at(rows, 60 * m) if 60 * m <= summary['wall_s'] + 60 else None
        for m in (5, 15, 30)
      },  # a run that ended earlier has no point there
      'curve': [(r['step'], r['elapsed_s'], r['bits_per_byte']) for r in rows],
    }

  summary = train(default_workdir, *DEFAULT_LM, fresh=False)
  out = {'default_run': run_record(default_workdir, summary)}
  if long_run:
    long_dir, long_summary = long_language_model(runs)
    out['long_run'] = run_record(long_dir, long_summary)
  cfg = shakespeare_lm.get_config()
  data = build_task_data(
    cfg.dataset,
    task='lm',
    max_len=cfg.model.max_len,
    batch_size=cfg.batch_size,
    seed=0,
    process_index=0,
    process_count=1,
  )
  out['unigram_bits_per_byte'] = unigram_bits_per_byte(data)
  out['samples'] = summary.get('report', {}).get('samples', [])[:2]
  return out


# What `python -m bench.quality` runs, in this order; the optional parts run only when named.
PARTS = (
  'numbers',
  *(key.removeprefix('numbers_') for key in SYSTEMATIC_SPLITS),
  'lm',
  'levers',
  'genre',
  'genre_seeds',
  'genre_settings',
  'peft',
)
OPTIONAL_PARTS = ('genre_settings_second_lm',)  # needs --second_lm


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    '--only',
    default=','.join(PARTS),
    help=f'comma-separated parts: {", ".join(PARTS + OPTIONAL_PARTS)}',
  )
  p.add_argument('--runs', default='runs/quality')
  p.add_argument(
    '--pretrained',
    default='runs/quality/shakespeare_lm',
    help="the default LM run (trained if missing; not the Quickstart's runs/shakespeare_lm)",
  )
  p.add_argument(
    '--genre_sizes', default='30,100,300,0', help='labelled passages per class (0 = all)'
  )
  p.add_argument('--scratch_sizes', default='100', help='sizes that also train from scratch')
  p.add_argument(
    '--no_long_lm',
    action='store_true',
    help="skip the long LM's row (the genre part still trains it: it fine-tunes from it)",
  )
  p.add_argument('--pairs', default='en_de,en_fr', help='number-word language pairs')
  p.add_argument(
    '--second_lm',
    default='',
    metavar='DIR',
    help='a finished run of the default LM config (another seed, or trained on another core '
    'count) for genre_settings_second_lm; read, never written',
  )
  args = p.parse_args()
  # Every path is relative to the repository root, where train.py runs: check them there.
  if os.path.realpath(os.getcwd()) != os.path.realpath(REPO):
    usage_error(f'run bench.quality from the repository root ({REPO})')
  parts = args.only.split(',')
  unknown = sorted(set(parts) - set(PARTS + OPTIONAL_PARTS))
  if unknown:
    usage_error(
      f'unknown part(s) {", ".join(unknown)}; the parts: {", ".join(PARTS + OPTIONAL_PARTS)}'
    )
  if 'genre_settings_second_lm' in parts and not (
    args.second_lm and os.path.exists(os.path.join(args.second_lm, 'summary.json'))
  ):
    usage_error('genre_settings_second_lm needs --second_lm=DIR, a finished LM run')
  refuse_foreign(args.pretrained)  # now, before hours of other parts
  os.makedirs(DOCS, exist_ok=True)
  path = os.path.join(DOCS, 'results.json')
  results = json.load(open(path)) if os.path.exists(path) else {}
  results['machine'] = {
    'platform': platform.platform(),
    'processor': _cpu_name(),
    'cpus': os.cpu_count(),
    'date': time.strftime('%Y-%m-%d'),
  }
  measured = {'date': time.strftime('%Y-%m-%d'), 'commit': _commit()}
  results.setdefault('measured', {})
  if 'numbers' in parts:
    results['numbers'] = numbers(args.runs, args.pairs.split(','), results.get('numbers'))
    results['measured']['numbers'] = measured
  for key in SYSTEMATIC_SPLITS:
    if key.removeprefix('numbers_') in parts:
      results[key] = systematic_numbers(args.runs, key, results.get(key))
      results['measured'][key] = measured
  if 'lm' in parts:
    before = measured_before(results, 'lm')
    previous = results.get('lm', {}).get('long_run')
    results['lm'] = language_model(args.runs, args.pretrained, long_run=not args.no_long_lm)
    results['measured']['lm'] = measured
    if 'long_run' in results['lm']:
      results['lm']['long_run']['measured'] = measured
    elif previous:  # --no_long_lm keeps the last long run, with the date it was measured on
      results['lm']['long_run'] = dict(previous, measured=previous.get('measured', before))
    shutil.copy(
      os.path.join(args.pretrained, 'loss_curve.png'),
      os.path.join(DOCS, 'shakespeare_lm_loss_curve.png'),
    )
  if 'levers' in parts:
    results['lm_levers'] = quality_levers.measure(args.runs, out=results.get('lm_levers'))
    results['measured']['lm_levers'] = measured
  if 'genre' in parts:
    train(args.pretrained, *DEFAULT_LM, fresh=False)
    long_dir, _ = long_language_model(args.runs)
    results['genre'] = genre(
      args.runs,
      long_dir,
      args.pretrained,
      tuple(int(x) for x in args.genre_sizes.split(',')),
      tuple(int(x) for x in args.scratch_sizes.split(',')),
      results.get('genre'),
    )
    results['measured']['genre'] = measured
  if 'genre_seeds' in parts:
    train(args.pretrained, *DEFAULT_LM, fresh=False)
    history = results.get('genre_seeds', {}).get('earlier_defaults')
    results['genre_seeds'] = genre_seeds(args.runs, args.pretrained)
    if history:  # the same table on the LMs that were the default before, kept by hand
      results['genre_seeds']['earlier_defaults'] = history
    results['measured']['genre_seeds'] = measured
  if 'genre_settings' in parts:
    train(args.pretrained, *DEFAULT_LM, fresh=False)
    results['genre_settings'] = genre_settings(args.runs, args.pretrained)
    results['measured']['genre_settings'] = measured
  if 'genre_settings_second_lm' in parts:
    results['genre_settings_second_lm'] = genre_settings(
      os.path.join(args.runs, 'second_lm'),
      args.second_lm,
      settings=SECOND_LM_SETTINGS,
      lm_label='a second run of the default LM',
    )
    results['measured']['genre_settings_second_lm'] = measured
  if 'peft' in parts:
    long_dir, _ = long_language_model(args.runs)
    results['peft'] = peft(args.runs, long_dir, out=results.get('peft'))
    results['measured']['peft'] = measured
  with open(path + '.tmp', 'w') as f:
    json.dump(results, f, indent=2)
  os.replace(path + '.tmp', path)
  write_markdown(results, os.path.join(REPO, 'docs', 'results.md'))
  print(json.dumps(results, indent=2))


def _commit() -> str:
  proc = subprocess.run(
    ['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True
  )
  return proc.stdout.strip() or 'unknown'


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    return platform.processor()


if __name__ == '__main__':
  main()
