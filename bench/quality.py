"""Trains and evaluates the three embedded tasks and writes docs/results.{json,md}.

    python -m bench.quality                    # everything (about 5 hours on a 2-core CPU)
    python -m bench.quality --only numbers     # one part (or several, comma-separated):
                                               # numbers | systematic | unseen_pairs | lm |
                                               # genre | genre_seeds | peft

Each part trains through train.py (a subprocess, exactly what a user runs), scores with
jaxformer.evaluate, and records wall time. Baselines: a unigram LM (bits per byte) and
TF-IDF + logistic regression for genres (scikit-learn, needed here only).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

from bench.quality_report import measured_before, write_markdown

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _signature(config: str, overrides) -> str:
  with open(os.path.join(REPO, config), 'rb') as f:
    return hashlib.sha256(f.read() + json.dumps(list(overrides)).encode()).hexdigest()


def train(workdir: str, config: str, *overrides: str, fresh: bool = True) -> dict:
  """Runs train.py; returns its summary.json.

  Without `fresh`, a finished run is reused and an interrupted one resumes, but only if it was
  started from the same config file contents and overrides; otherwise it is trained again.
  """
  summary_path = os.path.join(workdir, 'summary.json')
  sig_path = os.path.join(workdir, 'quality_signature.txt')
  signature = _signature(config, overrides)
  stale = not os.path.exists(sig_path) or open(sig_path).read() != signature
  if os.path.exists(workdir) and (fresh or stale):
    shutil.rmtree(workdir)
  os.makedirs(workdir, exist_ok=True)
  with open(sig_path, 'w') as f:
    f.write(signature)
  if not os.path.exists(summary_path):
    cmd = [
      sys.executable,
      'train.py',
      f'--config={config}',
      f'--workdir={workdir}',
      '--config.progress=false',
      *overrides,
    ]
    print('$', ' '.join(cmd), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{proc.stderr[-3000:]}')
    print(f'  done in {time.time() - t0:.0f}s', flush=True)
    with open(os.path.join(workdir, 'load.json'), 'w') as f:
      json.dump({'load_5min': os.getloadavg()[1]}, f)  # how shared the machine was at the end
  with open(summary_path) as f:
    summary = json.load(f)
  load_path = os.path.join(workdir, 'load.json')
  summary['load'] = json.load(open(load_path))['load_5min'] if os.path.exists(load_path) else None
  return summary


def evaluate(workdir: str, split: str, **kw) -> dict:
  from jaxformer import evaluate as ev
  from jaxformer import inference

  return ev.evaluate(inference.load(workdir), split, **kw)


def val_rows(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == 'val']


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

  from jaxformer.data import bits_per_byte

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
# `python -m jaxformer.experiments heads_dynamics --workdir runs/shakespeare_lm` can follow its
# heads through training; the kept history changes no weight or metric.
DEFAULT_LM = ('configs/shakespeare_lm.py', '--config.keep_every_steps=100')


def long_language_model(runs: str) -> tuple[str, dict]:
  """The default LM config at twice its steps (about 30 minutes): trained once, then reused."""
  from jaxformer.configs import shakespeare_lm

  workdir = os.path.join(runs, 'shakespeare_lm_30min')
  steps = 2 * shakespeare_lm.get_config().num_train_steps
  return workdir, train(
    workdir, 'configs/shakespeare_lm.py', f'--config.num_train_steps={steps}', fresh=False
  )


def language_model(runs: str, default_workdir: str, long_run: bool = True) -> dict:
  """The default config's run, and the same config at twice the steps (about 30 minutes)."""
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


# ----------------------------------------------------------------------------- genre
def tfidf_baseline(per_class: int, train_split: str) -> float:
  from sklearn.feature_extraction.text import TfidfVectorizer
  from sklearn.linear_model import LogisticRegression

  from jaxformer import metrics
  from jaxformer.data import build_task_data

  # Only the raw texts and the per-class sample are used; max_len is big enough that the
  # pipeline's truncation warning (about arrays never built here) stays quiet.
  data = build_task_data(
    {
      'name': 'jaxformer_genre',
      'tokenizer': 'byte',
      'train_split': train_split,
      'examples_per_class': per_class,
    },
    task='classify',
    max_len=1 << 14,
    batch_size=8,
    seed=0,
    process_index=0,
    process_count=1,
  )
  train_ex = data.examples(train_split)
  keep = set(int(i) for i in data.train_indices())
  train_ex = [e for i, e in enumerate(train_ex) if i in keep]
  test_ex = data.examples('test')
  vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
  x = vec.fit_transform([e['text'] for e in train_ex])
  clf = LogisticRegression(max_iter=2000, C=10.0).fit(x, [e['label'] for e in train_ex])
  pred = clf.predict(vec.transform([e['text'] for e in test_ex]))
  return metrics.balanced_accuracy([e['label'] for e in test_ex], pred)


def last_step_accuracy(workdir: str) -> float:
  """Test balanced accuracy of the LAST checkpoint (not the best): what no early stopping gives."""
  from jaxformer import evaluate as ev
  from jaxformer import inference
  from jaxformer.checkpoint import Checkpointer

  loaded = inference.load(workdir)
  with Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True) as ckpt:
    step, params = ckpt.restore_params(ckpt.latest_step())
  last = dataclasses.replace(loaded, params=params, step=step)
  return ev.evaluate(last, 'test', out_dir=os.path.join(workdir, 'last_step_eval'))[
    'balanced_accuracy'
  ]


def _genre_split(n: int) -> str:
  """'train' holds exactly 100 per class; bigger samples come from train_full."""
  return 'train' if n and n <= 100 else 'train_full'


def genre_run(kind: str, n: int, workdir: str, init_from: str | None = None, *extra: str) -> dict:
  """configs/genre_{kind}.py on n labelled passages per class (0 = all), scored on test."""
  overrides = [
    f'--config.dataset.examples_per_class={n}',
    f'--config.dataset.train_split={_genre_split(n)}',
  ]
  overrides += [f'--config.init_from={init_from}'] if init_from else []
  summary = train(workdir, f'configs/genre_{kind}.py', *overrides, *extra, fresh=False)
  result = evaluate(workdir, 'test')
  return {
    'balanced_accuracy': result['balanced_accuracy'],
    'accuracy': result['accuracy'],
    'stopped_early': summary['stopped_early'],
    'best_step': summary['best_step'],
    'last_step': summary['last_step'],
    'wall_s': summary['wall_s'],
    'load': summary['load'],
  }


def genre(
  runs: str,
  pretrained: str,
  default_lm: str,
  sizes=(30, 100, 300, 0),
  scratch_sizes=(100,),
  out=None,
) -> dict:
  """The learning curve fine-tuned from `pretrained`, scratch and TF-IDF rows, and 100 per class
  fine-tuned from `default_lm` as well (how much the pretraining budget matters)."""
  out = dict(out or {})
  out.setdefault('learning_curve', {})
  out.setdefault('tfidf', {})
  out['init_from'] = pretrained

  for n in sizes:
    name = str(n or 'all')
    row = dict(out['learning_curve'].get(name, {}))  # keeps a scratch result not re-run
    row['finetune'] = genre_run(
      'finetune', n, os.path.join(runs, f'genre_finetune_{name}'), pretrained
    )
    if n in scratch_sizes:
      workdir = os.path.join(runs, f'genre_scratch_{name}')
      row['scratch'] = genre_run('scratch', n, workdir)
      if n == 100:
        row['scratch']['last_step_balanced_accuracy'] = last_step_accuracy(workdir)
        shutil.copy(
          os.path.join(workdir, 'loss_curve.png'),
          os.path.join(DOCS, 'genre_scratch_loss_curve.png'),
        )
    out['learning_curve'][name] = row
    out['tfidf'][name] = tfidf_baseline(n, _genre_split(n))
  out['finetune_from_default_lm'] = dict(
    genre_run('finetune', 100, os.path.join(runs, 'genre_finetune_100_default_lm'), default_lm),
    init_from=default_lm,
  )
  out.pop(
    'finetune_from_30min_lm', None
  )  # the layout before the curve started from the 30-minute LM
  return out


GENRE_SEEDS = (0, 1, 2)


def genre_seeds(runs: str, default_lm: str, seeds=GENRE_SEEDS, n: int = 100) -> dict:
  """n per class fine-tuned from the default LM and trained from scratch, once per seed
  (config.seed: the head's init, dropout and data order): is the gap above seed noise?"""
  import statistics

  out = {'init_from': default_lm, 'examples_per_class': n}
  for kind, init_from in (('finetune', default_lm), ('scratch', None)):
    rows = {
      str(seed): genre_run(
        kind,
        n,
        os.path.join(runs, f'genre_{kind}_{n}_seed{seed}'),
        init_from,
        f'--config.seed={seed}',
      )
      for seed in seeds
    }
    accuracy = [r['balanced_accuracy'] for r in rows.values()]
    out[kind] = {
      'per_seed': rows,
      'mean': statistics.mean(accuracy),
      'std': statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
      'min': min(accuracy),
      'max': max(accuracy),
    }
  return out


# ----------------------------------------------------------------------------- LoRA vs full
# Fewer trainable parameters on few labels (issue 20): each method fine-tunes the 30-minute LM with
# configs/genre_finetune.py's data, model, dropout and early stopping. Full fine-tuning is the genre
# part's curve. The learning rate of the other two was fixed before any run (1e-3, the usual for
# adapters and linear heads), not tuned on these numbers.
PEFT_METHODS = {
  'head_only': ('--config.freeze_backbone=True',),
  'lora_r4': ('--config.lora.rank=4', '--config.lora.alpha=8'),
  'lora_r16': ('--config.lora.rank=16', '--config.lora.alpha=32'),
}
PEFT_COMMON = (
  '--config.learning_rate=1e-3',
  '--config.backbone_lr_multiplier=1.0',  # the full fine-tuning options, off: nothing else trains
  '--config.head_only_steps=0',
  '--config.lora.targets=attention,mlp',
)


def trainable_parameters(workdir: str) -> tuple[int, int]:
  """(trainable, total) parameter counts of a finished run."""
  import jax
  import numpy as np

  from jaxformer import inference
  from jaxformer.model import lora

  loaded = inference.load(workdir)
  sizes = [int(np.size(x)) for x in jax.tree.leaves(loaded.params)]
  frozen = loaded.config.get('freeze_backbone') or lora.has_factors(loaded.params)
  if not frozen:
    return sum(sizes), sum(sizes)
  labels = jax.tree.leaves(lora.trainable_labels(loaded.params))
  return sum(n for n, lab in zip(sizes, labels, strict=True) if lab == 'trainable'), sum(sizes)


def peft(runs: str, pretrained: str, sizes=(30, 100, 300), out=None) -> dict:
  """Full, head-only and LoRA (rank 4, 16) genre fine-tuning at each size, from `pretrained`.
  The full fine-tuning runs are the genre part's own (same arguments: trained once, reused)."""
  out = dict(out or {})
  for method, overrides in {'full': None, **PEFT_METHODS}.items():
    for n in sizes:
      data = (
        f'--config.dataset.examples_per_class={n}',
        f'--config.dataset.train_split={"train" if n <= 100 else "train_full"}',
      )
      if overrides is None:  # the genre part's run, with its arguments in its order: reused
        workdir = os.path.join(runs, f'genre_finetune_{n}')
        args = (*data, f'--config.init_from={pretrained}')
      else:
        workdir = os.path.join(runs, f'genre_{method}_{n}')
        args = (f'--config.init_from={pretrained}', *data, *PEFT_COMMON, *overrides)
      summary = train(workdir, 'configs/genre_finetune.py', *args, fresh=False)
      trainable, total = trainable_parameters(workdir)
      cfg = json.load(open(os.path.join(workdir, 'config.json')))
      tokens_per_step = cfg['batch_size'] * cfg['model']['max_len']
      out.setdefault(method, {})[str(n)] = {
        'balanced_accuracy': evaluate(workdir, 'test')['balanced_accuracy'],
        'trainable_params': trainable,
        'total_params': total,
        'step_s': (  # None when the run logged no throughput window
          tokens_per_step / summary['padded_tokens_per_s']
          if summary.get('padded_tokens_per_s')
          else None
        ),
        'best_step': summary['best_step'],
        'last_step': summary['last_step'],
        'wall_s': summary['wall_s'],
        'load': summary['load'],
      }
  return out


DOCS = os.path.join(REPO, 'docs', 'results')


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--only', default='numbers,systematic,unseen_pairs,lm,genre,genre_seeds,peft')
  p.add_argument('--runs', default='runs/quality')
  p.add_argument(
    '--pretrained', default='runs/shakespeare_lm', help='the default LM run (trained if missing)'
  )
  p.add_argument(
    '--genre_sizes', default='30,100,300,0', help='labelled passages per class (0 = all)'
  )
  p.add_argument('--scratch_sizes', default='100', help='sizes that also train from scratch')
  p.add_argument(
    '--no_long_lm',
    action='store_true',
    help="skip the 30-minute LM's row (the genre part still trains it: it fine-tunes from it)",
  )
  p.add_argument('--pairs', default='en_de,en_fr', help='number-word language pairs')
  args = p.parse_args()
  os.makedirs(DOCS, exist_ok=True)
  path = os.path.join(DOCS, 'results.json')
  results = json.load(open(path)) if os.path.exists(path) else {}
  results['machine'] = {
    'platform': platform.platform(),
    'processor': _cpu_name(),
    'cpus': os.cpu_count(),
    'date': time.strftime('%Y-%m-%d'),
  }
  parts = args.only.split(',')
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
    elif previous:  # --no_long_lm keeps the last 30-minute run, with the date it was measured on
      results['lm']['long_run'] = dict(previous, measured=previous.get('measured', before))
    shutil.copy(
      os.path.join(args.pretrained, 'loss_curve.png'),
      os.path.join(DOCS, 'shakespeare_lm_loss_curve.png'),
    )
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
    results['genre_seeds'] = genre_seeds(args.runs, args.pretrained)
    results['measured']['genre_seeds'] = measured
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
