"""Trains and evaluates the three embedded tasks and writes docs/results.{json,md}.

    python bench/quality.py                    # everything (about 1.5 hours on a 2-core CPU)
    python bench/quality.py --only numbers     # one part: numbers | lm | genre

Each part trains through train.py (a subprocess, exactly what a user runs), scores with
jaxformer.evaluate, and records wall time. Baselines: a unigram LM (bits per byte) and
TF-IDF + logistic regression for genres (scikit-learn, needed here only).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def train(workdir: str, config: str, *overrides: str, fresh: bool = True) -> dict:
  """Runs train.py; returns its summary.json (reuses a finished run unless `fresh`)."""
  summary_path = os.path.join(workdir, 'summary.json')
  if fresh and os.path.exists(workdir):
    shutil.rmtree(workdir)
  if not os.path.exists(summary_path):
    cmd = [sys.executable, 'train.py', f'--config={config}', f'--workdir={workdir}',
           '--config.progress=false', *overrides]
    print('$', ' '.join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
    print(f'  done in {time.time() - t0:.0f}s', flush=True)
  with open(summary_path) as f:
    return json.load(f)


def evaluate(workdir: str, split: str, **kw) -> dict:
  from jaxformer import evaluate as ev, inference
  return ev.evaluate(inference.load(workdir), split, **kw)


def val_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == 'val']


# ----------------------------------------------------------------------------- numbers
def numbers(runs: str, pairs=('en_de', 'en_fr'), out=None) -> dict:
  out = dict(out or {})
  for pair in pairs:
    workdir = os.path.join(runs, f'numbers_{pair}')
    summary = train(workdir, 'configs/numbers_translate.py', f'--config.dataset.name=jaxformer_numbers/{pair}',
                    fresh=False)  # an interrupted run resumes exactly
    result = evaluate(workdir, 'test', beam_size=4)
    out[pair] = {'exact_match_greedy': result['exact_match_greedy'],
                 'exact_match_beam': result['exact_match_beam'], 'bleu_beam': result['bleu_beam'],
                 'test_examples': result['num_examples'], 'train_wall_s': summary['wall_s'],
                 'steps': summary['last_step'], 'examples': result['examples'][:3]}
  return out


# ----------------------------------------------------------------------------- language model
def unigram_bits_per_byte(data) -> float:
  """Cross-entropy of the validation tokens under the train split's add-one unigram, per byte."""
  import numpy as np
  train = np.asarray(data.encoded(data.splits['train']).tokens.values)
  val = np.asarray(data.encoded(data.splits['eval']).tokens.values)
  counts = np.bincount(train, minlength=data.tokenizer.vocab_size) + 1.0
  logp = np.log(counts / counts.sum())
  nats = -float(np.mean(logp[val[1:]]))
  return nats / math.log(2) / data.bytes_per_token(data.splits['eval'])


def bpb_at(rows: list[dict], seconds: float) -> float | None:
  """Validation bits/byte of the last evaluation that finished within `seconds` of the start."""
  done = [r for r in rows if r.get('elapsed_s', math.inf) <= seconds]
  return done[-1]['bits_per_byte'] if done else None


def language_model(runs: str, default_workdir: str, long_run: bool = True) -> dict:
  from configs import shakespeare_lm
  from jaxformer.data import build_task_data
  summary = train(default_workdir, 'configs/shakespeare_lm.py', fresh=False)
  default_rows = val_rows(default_workdir)
  full = evaluate(default_workdir, 'validation')
  long_dir = os.path.join(runs, 'shakespeare_lm_30min')
  steps = 2 * shakespeare_lm.get_config().num_train_steps
  if long_run:
    long_summary = train(long_dir, 'configs/shakespeare_lm.py', f'--config.num_train_steps={steps}')
    long_rows = val_rows(long_dir)
  else:  # only the default run: its own evaluations give the 5- and 15-minute points
    long_summary, long_rows = {'wall_s': None, 'last_step': None}, default_rows
  cfg = shakespeare_lm.get_config()
  data = build_task_data(cfg.dataset, task='lm', max_len=cfg.model.max_len, batch_size=cfg.batch_size,
                         seed=0, process_index=0, process_count=1)
  return {
      'default_run': {'wall_s': summary['wall_s'], 'steps': summary['last_step'],
                      'val_bits_per_byte_full_split': full['bits_per_byte'], 'val_loss_full_split': full['loss'],
                      'tokens_per_s': summary['tokens_per_s']},
      'bits_per_byte_after': {'5min': bpb_at(long_rows, 300), '15min_default_config': full['bits_per_byte'],
                              '15min_in_30min_run': bpb_at(long_rows, 900),
                              '30min': (bpb_at(long_rows, 1800) or long_rows[-1]['bits_per_byte']) if long_run else None},
      'long_run': {'wall_s': long_summary['wall_s'], 'steps': long_summary['last_step']},
      'unigram_bits_per_byte': unigram_bits_per_byte(data),
      'samples': summary.get('report', {}).get('samples', [])[:2],
  }


# ----------------------------------------------------------------------------- genre
def tfidf_baseline(per_class: int, train_split: str) -> float:
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression
  from sklearn.metrics import balanced_accuracy_score
  from jaxformer.data import build_task_data
  data = build_task_data({'name': 'jaxformer_genre', 'tokenizer': 'byte', 'train_split': train_split,
                          'examples_per_class': per_class}, task='classify', max_len=8, batch_size=8,
                         seed=0, process_index=0, process_count=1)
  train_ex = data.examples(train_split)
  keep = set(int(i) for i in data.train_indices())
  train_ex = [e for i, e in enumerate(train_ex) if i in keep]
  test_ex = data.examples('test')
  vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
  x = vec.fit_transform([e['text'] for e in train_ex])
  clf = LogisticRegression(max_iter=2000, C=10.0).fit(x, [e['label'] for e in train_ex])
  pred = clf.predict(vec.transform([e['text'] for e in test_ex]))
  return float(balanced_accuracy_score([e['label'] for e in test_ex], pred))


def last_step_accuracy(workdir: str) -> float:
  """Test balanced accuracy of the LAST checkpoint (not the best): what no early stopping gives."""
  from jaxformer import evaluate as ev, inference
  from jaxformer.checkpoint import Checkpointer
  loaded = inference.load(workdir)
  with Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True) as ckpt:
    step, params = ckpt.restore_params(ckpt.latest_step())
  last = dataclasses.replace(loaded, params=params, step=step)
  return ev.evaluate(last, 'test', out_dir=os.path.join(workdir, 'last_step_eval'))['balanced_accuracy']


def genre(runs: str, pretrained: str, sizes=(30, 100, 300, 0)) -> dict:
  out = {'learning_curve': {}, 'tfidf': {}}
  for n in sizes:
    split = 'train' if n and n <= 100 else 'train_full'
    overrides = [f'--config.dataset.examples_per_class={n}', f'--config.dataset.train_split={split}']
    row = {}
    for kind in ('scratch', 'finetune'):
      workdir = os.path.join(runs, f'genre_{kind}_{n or "all"}')
      extra = [f'--config.init_from={pretrained}'] if kind == 'finetune' else []
      summary = train(workdir, f'configs/genre_{kind}.py', *overrides, *extra)
      result = evaluate(workdir, 'test')
      row[kind] = {'balanced_accuracy': result['balanced_accuracy'], 'accuracy': result['accuracy'],
                   'stopped_early': summary['stopped_early'], 'best_step': summary['best_step'],
                   'last_step': summary['last_step'], 'wall_s': summary['wall_s']}
      if kind == 'scratch' and n == 100:
        row[kind]['last_step_balanced_accuracy'] = last_step_accuracy(workdir)
        shutil.copy(os.path.join(workdir, 'loss_curve.png'), os.path.join(DOCS, 'genre_scratch_loss_curve.png'))
    out['learning_curve'][str(n or 'all')] = row
    out['tfidf'][str(n or 'all')] = tfidf_baseline(n, split)
  return out


DOCS = os.path.join(REPO, 'docs', 'results')


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--only', default='numbers,lm,genre')
  p.add_argument('--runs', default='runs/quality')
  p.add_argument('--pretrained', default='runs/shakespeare_lm', help='the default LM run (trained if missing)')
  p.add_argument('--genre_sizes', default='30,100,300,0')
  p.add_argument('--no_long_lm', action='store_true', help='skip the 30-minute LM run')
  p.add_argument('--pairs', default='en_de,en_fr', help='number-word language pairs')
  args = p.parse_args()
  os.makedirs(DOCS, exist_ok=True)
  path = os.path.join(DOCS, 'results.json')
  results = json.load(open(path)) if os.path.exists(path) else {}
  results['machine'] = {'platform': platform.platform(), 'processor': _cpu_name(), 'cpus': os.cpu_count(),
                        'date': time.strftime('%Y-%m-%d')}
  parts = args.only.split(',')
  if 'numbers' in parts:
    results['numbers'] = numbers(args.runs, args.pairs.split(','), results.get('numbers'))
  if 'lm' in parts:
    results['lm'] = language_model(args.runs, args.pretrained, long_run=not args.no_long_lm)
    shutil.copy(os.path.join(args.pretrained, 'loss_curve.png'), os.path.join(DOCS, 'shakespeare_lm_loss_curve.png'))
  if 'genre' in parts:
    train(args.pretrained, 'configs/shakespeare_lm.py', fresh=False)
    results['genre'] = genre(args.runs, args.pretrained, tuple(int(x) for x in args.genre_sizes.split(',')))
  with open(path + '.tmp', 'w') as f:
    json.dump(results, f, indent=2)
  os.replace(path + '.tmp', path)
  write_markdown(results, os.path.join(REPO, 'docs', 'results.md'))
  print(json.dumps(results, indent=2))


def _f(x, digits=3):
  return '—' if x is None else f'{x:.{digits}f}'


def write_markdown(r: dict, path: str) -> None:
  """docs/results.md, rendered from results.json so the prose can never drift from the numbers."""
  m = r.get('machine', {})
  lines = ['# Measured quality', '',
           f"Machine: {m.get('processor')} ({m.get('cpus')} vCPUs, no accelerator), {m.get('platform')}; "
           f"date {m.get('date')}. Produced by `python bench/quality.py`; raw numbers in "
           '[results/results.json](results/results.json). Wall times include compilation and evaluation, '
           'and were measured while other jobs shared the machine unless noted.', '']
  if 'numbers' in r:
    lines += ['## Number words (encoder-decoder, bytes)', '',
              '| pair | exact match, greedy | exact match, beam 4 | BLEU (beam) | train wall time | steps | target |',
              '|---|---|---|---|---|---|---|']
    for pair, v in r['numbers'].items():
      target = 'exact match >= 99% in <= 10 min: ' + (
          'met' if pair != 'en_de' or (v['exact_match_beam'] >= 0.99 and v['train_wall_s'] <= 600) else 'missed')
      lines.append(f"| {pair} | {_f(v['exact_match_greedy'])} | {_f(v['exact_match_beam'])} | "
                   f"{_f(v['bleu_beam'], 1)} | {v['train_wall_s']:.0f} s | {v['steps']} | "
                   f"{target if pair == 'en_de' else 'reported'} |")
    lines += ['', 'BLEU is near zero by construction here: most German and French number words are a '
              'single word, so a sentence has no 2-, 3- or 4-grams to match; exact match is the metric '
              'that counts. Wall time includes evaluations and checkpoints. The en_de run of 2026-11-29 '
              'was paused at step 200 (it shared the CPU with several other jobs) and resumed exactly; '
              'its wall time covers only steps 201-1200 on a mostly quiet machine, so the full '
              '1200-step config needs about 16 minutes: the 10-minute budget is missed.', '']
    missing = [p for p in ('en_de', 'en_fr') if p not in r['numbers']]
    if missing:
      lines += [f"Not measured yet: {', '.join(missing)} (`python bench/quality.py --only numbers --pairs "
                f"{','.join(missing)}`).", '']
  if 'lm' in r:
    lm = r['lm']
    b = lm['bits_per_byte_after']
    lines += ['## Shakespeare language model (validation = 8 held-out plays)', '',
              '| training time | validation bits per byte |', '|---|---|',
              f"| first 5 min of wall time (evaluation subset) | {_f(b['5min'])} |",
              f"| first 15 min of wall time (evaluation subset) | {_f(b['15min_in_30min_run'])} |",
              f"| the whole default run (full validation split) | {_f(b['15min_default_config'])} |",
              f"| 30 min (twice the steps) | {_f(b['30min'])} |",
              f"| unigram baseline (train-split token frequencies) | {_f(lm['unigram_bits_per_byte'])} |", '',
              f"The default run took {lm['default_run']['wall_s']:.0f} s for {lm['default_run']['steps']} steps "
              f"({_f(lm['default_run']['tokens_per_s'], 0)} tokens/s). "
              '![loss curves](results/shakespeare_lm_loss_curve.png)', '']
    for sample in lm.get('samples', [])[:1]:
      lines += ['A sample from the default run:', '', '```', sample.strip(), '```', '']
  if 'genre' in r:
    g = r['genre']
    lines += ['## Genre classification (comedy / history / tragedy), test = 200 per class from held-out plays', '',
              '| labelled passages per class | pretrained + fine-tuned | from scratch | TF-IDF + logistic regression |',
              '|---|---|---|---|']
    for n, row in g['learning_curve'].items():
      lines.append(f"| {n} | {_f(row['finetune']['balanced_accuracy'])} | {_f(row['scratch']['balanced_accuracy'])} | "
                   f"{_f(g['tfidf'].get(n))} |")
    hundred = g['learning_curve'].get('100')
    if hundred:
      ft, sc = hundred['finetune']['balanced_accuracy'], hundred['scratch']['balanced_accuracy']
      met = [('fine-tuned >= 0.65', ft >= 0.65), ('>= scratch + 0.10', ft >= sc + 0.10),
             ('> TF-IDF', ft > (g['tfidf'].get('100') or 1))]
      lines += ['', 'Targets at 100 per class (balanced accuracy): ' +
                ', '.join(f"{name}: {'met' if ok else 'missed'}" for name, ok in met) + '.', '']
      s = hundred['scratch']
      if 'last_step_balanced_accuracy' in s:
        lines += ['### Early stopping on the scratch run (100 per class)', '',
                  f"It stopped early: {s['stopped_early']}, at step {s['last_step']} of the 600-step budget; "
                  f"the best checkpoint (step {s['best_step']}) scores {_f(s['balanced_accuracy'])} balanced "
                  f"accuracy on the test split, the last step {_f(s['last_step_balanced_accuracy'])}.", '',
                  '![scratch genre loss curves](results/genre_scratch_loss_curve.png)', '']
        if s['last_step_balanced_accuracy'] > s['balanced_accuracy']:
          lines += ['Here early stopping on validation *loss* kept a worse model: on 300 examples the '
                    'cross-entropy turns up (over-confident wrong answers) while accuracy is still rising, '
                    'so the target "the best checkpoint beats the last step" is missed. Early stopping on '
                    'validation accuracy, or more labelled data, would be the fix to try.', '']
    missing = [n for n in ('30', '100', '300', 'all') if n not in g['learning_curve']]
    if missing:
      lines += [f"Not measured yet (time ran out in the session that produced these numbers): "
                f"{', '.join(missing)} per class. Run `python bench/quality.py --only genre`.", '']
  with open(path + '.tmp', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  os.replace(path + '.tmp', path)


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    return platform.processor()


if __name__ == '__main__':
  main()
