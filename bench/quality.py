"""Trains and evaluates the three embedded tasks and writes docs/results.{json,md}.

    python bench/quality.py                    # everything (about 2.5 hours on a 2-core CPU)
    python bench/quality.py --only numbers     # one part: numbers | lm | genre

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

  summary = train(default_workdir, 'configs/shakespeare_lm.py', fresh=False)
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
  from sklearn.metrics import balanced_accuracy_score

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
  return float(balanced_accuracy_score([e['label'] for e in test_ex], pred))


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

  def split(n):  # 'train' holds exactly 100 per class; bigger samples come from train_full
    return 'train' if n and n <= 100 else 'train_full'

  def run(kind, n, workdir, init_from=None):
    overrides = [
      f'--config.dataset.examples_per_class={n}',
      f'--config.dataset.train_split={split(n)}',
    ]
    overrides += [f'--config.init_from={init_from}'] if init_from else []
    summary = train(
      workdir, f'configs/genre_{kind}.py', *overrides, fresh=False
    )  # same config: reuse
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

  for n in sizes:
    name = str(n or 'all')
    row = dict(out['learning_curve'].get(name, {}))  # keeps a scratch result not re-run
    row['finetune'] = run('finetune', n, os.path.join(runs, f'genre_finetune_{name}'), pretrained)
    if n in scratch_sizes:
      workdir = os.path.join(runs, f'genre_scratch_{name}')
      row['scratch'] = run('scratch', n, workdir)
      if n == 100:
        row['scratch']['last_step_balanced_accuracy'] = last_step_accuracy(workdir)
        shutil.copy(
          os.path.join(workdir, 'loss_curve.png'),
          os.path.join(DOCS, 'genre_scratch_loss_curve.png'),
        )
    out['learning_curve'][name] = row
    out['tfidf'][name] = tfidf_baseline(n, split(n))
  out['finetune_from_default_lm'] = dict(
    run('finetune', 100, os.path.join(runs, 'genre_finetune_100_default_lm'), default_lm),
    init_from=default_lm,
  )
  out.pop(
    'finetune_from_30min_lm', None
  )  # the layout before the curve started from the 30-minute LM
  return out


DOCS = os.path.join(REPO, 'docs', 'results')


def main() -> None:
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument('--only', default='numbers,lm,genre')
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
  if 'lm' in parts:
    before = _measured_before(results, 'lm')
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
    train(args.pretrained, 'configs/shakespeare_lm.py', fresh=False)
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
  with open(path + '.tmp', 'w') as f:
    json.dump(results, f, indent=2)
  os.replace(path + '.tmp', path)
  write_markdown(results, os.path.join(REPO, 'docs', 'results.md'))
  print(json.dumps(results, indent=2))


# Parts measured before bench/quality.py recorded a date and commit per part.
_UNRECORDED = {'date': '2026-11-29', 'note': 'before the issue 16 fixes'}


def _commit() -> str:
  proc = subprocess.run(
    ['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True
  )
  return proc.stdout.strip() or 'unknown'


def _measured_before(results: dict, part: str) -> dict:
  return results.get('measured', {}).get(part, _UNRECORDED)


def _when(m: dict) -> str:
  """'2026-12-02 at commit abc1234', or the date and a note for older records."""
  text = m['date'] + (f' at commit {m["commit"]}' if m.get('commit') else '')
  return text + (f', {m["note"]}' if m.get('note') else '')


def _provenance(r: dict, part: str) -> list[str]:
  return [f'Measured {_when(_measured_before(r, part))}.', '']


def _f(x, digits=3):
  return '—' if x is None else f'{x:.{digits}f}'


def write_markdown(r: dict, path: str) -> None:
  """docs/results.md, rendered from results.json so the prose can never drift from the numbers."""
  m = r.get('machine', {})
  lines = [
    '# Measured quality',
    '',
    f'Machine: {m.get("processor")} ({m.get("cpus")} vCPUs, no accelerator), {m.get("platform")}; '
    f'date {m.get("date")}. Produced by `python bench/quality.py`; raw numbers in '
    '[results/results.json](results/results.json). Wall times include compilation, evaluations and '
    'checkpoints. The machine is a shared VM: "load" is the 5-minute load average when a run ended '
    '(2 = both cores busy with this run alone; more means other jobs were competing).',
    '',
  ]
  if 'numbers' in r:
    lines += [
      '## Number words (encoder-decoder, SentencePiece pieces)',
      '',
      *_provenance(r, 'numbers'),
      '| pair | exact match, greedy | exact match, beam 4 | BLEU (beam) | train wall time | load '
      '| steps | target |',
      '|---|---|---|---|---|---|---|---|',
    ]
    for pair, v in sorted(r['numbers'].items()):
      ok = max(v['exact_match_greedy'], v['exact_match_beam']) >= 0.99 and v['train_wall_s'] <= 600
      target = (
        f'exact match >= 99% in <= 10 min: {"met" if ok else "missed"}'
        if pair == 'en_de'
        else 'reported'
      )
      lines.append(
        f'| {pair} | {_f(v["exact_match_greedy"])} | {_f(v["exact_match_beam"])} | '
        f'{_f(v["bleu_beam"], 1)} | {v["train_wall_s"]:.0f} s | {_f(v.get("load"), 1)} | '
        f'{v["steps"]} | {target} |'
      )
    lines += [
      '',
      'Test numbers never occur in training. German writes a number below a million as one '
      'word, so an en_de output is usually a single token for sacreBLEU, with no 2-, 3- or 4-grams '
      'to match: its BLEU is ~0 whether or not the output is right. French separates the words '
      '("cinq mille six cent soixante-neuf"), so its BLEU is meaningful. Exact match is the metric '
      'that counts for both.',
      '',
    ]
    if r.get('numbers_history'):
      lines += [
        'How the en_de config got here (earlier runs of the same script, test exact match):',
        '',
        '| config | greedy | beam 4 | train wall time | note |',
        '|---|---|---|---|---|',
      ]
      lines += [
        f'| {h["config"]} | {_f(h["exact_match_greedy"])} | {_f(h["exact_match_beam"])} | '
        f'{h["wall_s"]:.0f} s | {h["note"]} |'
        for h in r['numbers_history']
      ]
      lines.append('')
    for pair, v in sorted(r['numbers'].items()):
      ex = v['examples'][0]
      lines += [f'{pair}: "{ex["source"]}" -> "{ex["beam"]}" (reference "{ex["target"]}")', '']
  if 'lm' in r:
    lm = r['lm']
    d, l = lm['default_run'], lm.get('long_run', {})
    lines += [
      '## Shakespeare language model (validation = 8 held-out plays)',
      '',
      *_provenance(r, 'lm'),
      'Bits per byte of the validation text (lower is better). The default config '
      f'(`configs/shakespeare_lm.py`, {d["steps"]} steps) is sized for about 15 minutes; the '
      f'30-minute run is the same config with {l.get("steps") or "twice the"} steps. Points at '
      '5/15/30 minutes are the last evaluation finished by then, on a prefix of the validation '
      'split (its first 20 batches: 320 windows, 22% of its tokens); "end of run" is the whole '
      'split.',
      '',
      '| wall time | default config | 30-minute config |',
      '|---|---|---|',
    ]
    for label, key in (('5 min', '5min'), ('15 min', '15min'), ('30 min', '30min')):
      lines.append(
        f'| {label} | {_f(d.get("bpb_at", {}).get(key))} | {_f(l.get("bpb_at", {}).get(key))} |'
      )
    lines += [
      f'| end of run, full validation split | {_f(d["val_bits_per_byte_full_split"])} '
      f'({d["wall_s"]:.0f} s) | {_f(l.get("val_bits_per_byte_full_split"))} '
      f'({_f(l.get("wall_s"), 0)} s) |',
      f'| unigram baseline (train-split token frequencies) | {_f(lm["unigram_bits_per_byte"])} | |',
      '',
      f'Training throughput (median over log windows): default run {_f(d["tokens_per_s"], 0)} '
      f'tokens/s (load {_f(d.get("load"), 1)}), 30-minute run {_f(l.get("tokens_per_s"), 0)} '
      f'tokens/s (load {_f(l.get("load"), 1)}).',
      '',
      *(
        [
          f'The 30-minute column is older: measured {_when(l["measured"])}.',
          '',
        ]
        if l.get('measured') and l['measured'] != _measured_before(r, 'lm')
        else []
      ),
      '![loss curves of the default run](results/shakespeare_lm_loss_curve.png)',
      '',
    ]
    for sample in lm.get('samples', [])[:1]:
      lines += [
        'A sample from the default run (temperature 0.8):',
        '',
        '```',
        sample.strip(),
        '```',
        '',
      ]
  if 'genre' in r:
    g = r['genre']
    default_ft = g.get('finetune_from_default_lm')
    lines += [
      '## Genre classification (comedy / history / tragedy)',
      '',
      *_provenance(r, 'genre'),
      'Balanced accuracy on the test split: 200 passages per class from plays that no training or '
      'validation passage comes from. Fine-tuned = `configs/genre_finetune.py` started from the '
      f'30-minute LM run (`--config.init_from={g.get("init_from")}`: the default LM config at '
      'twice its steps); scratch = `configs/genre_scratch.py`, the same architecture from random '
      'weights; both keep the checkpoint with the lowest validation error (early stopping, '
      'patience 6). Sizes above 100 per class sample from `train_full` (all 6,085 training-play '
      'passages).',
      '',
      '| labelled passages per class | pretrained + fine-tuned | from scratch | TF-IDF + logistic '
      'regression | fine-tuning steps (best / stopped) |',
      '|---|---|---|---|---|',
    ]
    order = ('30', '100', '300', 'all')
    for n in sorted(g['learning_curve'], key=lambda n: order.index(n) if n in order else 9):
      row = g['learning_curve'][n]
      ft = row['finetune']
      lines.append(
        f'| {n} | {_f(ft["balanced_accuracy"])} | '
        f'{_f(row.get("scratch", {}).get("balanced_accuracy"))} | {_f(g["tfidf"].get(n))} | '
        f'{ft["best_step"]} / {ft["last_step"]} |'
      )
    if default_ft:
      lines += [
        '',
        'Fine-tuned from the default 15-minute LM instead '
        f'(`--config.init_from={default_ft["init_from"]}`, same settings, 100 per class): '
        f'{_f(default_ft["balanced_accuracy"])} balanced accuracy (best step '
        f'{default_ft["best_step"]}, stopped at {default_ft["last_step"]}). One seed each, but the '
        'longer pretraining moved this number more than any fine-tuning setting did.',
      ]
    if r.get('genre_history'):
      lines += [
        '',
        'Fine-tuning settings tried at 100 per class, from the default LM (chosen by validation '
        'accuracy, which comes from the training plays; the test column is shown for the record, '
        'it did not choose):',
        '',
        '| fine-tuning settings | best validation accuracy | test balanced accuracy |',
        '|---|---|---|',
      ]
      lines += [
        f'| {h["config"]} | {_f(h["val_accuracy"])} | {_f(h["test_balanced_accuracy"])} |'
        for h in r['genre_history']
      ]
    hundred = g['learning_curve'].get('100')
    if hundred and 'scratch' in hundred:
      ft, sc = hundred['finetune']['balanced_accuracy'], hundred['scratch']['balanced_accuracy']
      tfidf = g['tfidf'].get('100') or 1
      default_value = default_ft['balanced_accuracy'] if default_ft else None
      for label, value in (('30-minute LM', ft), ('default 15-minute LM', default_value)):
        if value is None:
          continue
        met = [
          ('>= 0.65', value >= 0.65),
          ('>= scratch + 0.10', value >= sc + 0.10),
          ('> TF-IDF', value > tfidf),
        ]
        lines += [
          '',
          f'Targets at 100 per class, fine-tuned from the {label} ({_f(value)}): '
          + ', '.join(f'{name}: {"met" if ok else "missed"}' for name, ok in met)
          + '.',
        ]
      lines.append('')
      s = hundred['scratch']
      if 'last_step_balanced_accuracy' in s:
        better = s['balanced_accuracy'] > s['last_step_balanced_accuracy']
        lines += [
          '### Early stopping on the scratch run (100 per class = 300 examples)',
          '',
          f'Stopped early: {"yes" if s["stopped_early"] else "no"}, at step {s["last_step"]} of '
          'the '
          f'600-step budget. The kept checkpoint (step {s["best_step"]}, lowest validation error) '
          'scores '
          f"{_f(s['balanced_accuracy'])} balanced accuracy on the test split; the last step's "
          'weights '
          f'score {_f(s["last_step_balanced_accuracy"])}: the best checkpoint is '
          f'{"better" if better else "not better"}.',
          '',
          '![scratch genre loss curves](results/genre_scratch_loss_curve.png)',
          '',
        ]
    missing = [n for n in order if n not in g['learning_curve']]
    if missing:
      lines += [
        f'Not measured yet: {", ".join(missing)} per class (`python bench/quality.py --only genre '
        f'--genre_sizes ...`); a dash in the table is a run that was not made.',
        '',
      ]
  lines += [
    '## Measured elsewhere',
    '',
    '- Sequence packing on number words (fill, real tokens/s, time to 99% exact match): '
    '[packing.md](packing.md), from `python -m bench.packing`.',
    '- Speed against peers: [performance.md](performance.md).',
    '',
  ]
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
