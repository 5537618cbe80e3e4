"""pretraining: does a pretrained LM, fine-tuned, resist overfitting on a few labelled examples?

Genre classification (comedy / history / tragedy) of 300-700-character passages, tested on 600
passages of held-out plays, with n labelled passages per class (n in SIZES; 0 = all ~2,000):
    fine-tuned   configs/genre_finetune.py: the LM's backbone, its tokenizer, a new head
    scratch      configs/genre_scratch.py: the same architecture from random weights (its own
                 BPE tokenizer of the same size, trained on the genre passages' unlabelled text)
    TF-IDF       word uni+bigram TF-IDF + logistic regression (scikit-learn, the `experiments`
                 extra; skipped with a message when it is not installed)
Each (approach, n) runs with several seeds; a seed changes the labelled subset, the
initialisation and the data order. The neural runs train a fixed number of steps with early
stopping on the 150 validation passages and keep the best weights.

The LM is the --workdir run (default: the default LM of configs/shakespeare_lm.py, the one heads
and depth analyse, trained once and cached); scratch gets its architecture. Each of the 30
neural runs is 40 steps of 8 passages: the experiment took 18 minutes on one core of a 2-vCPU
VM (the other core busy; docs/experiments.md's wall-time table).
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from jaxformer import metrics, plotting
from jaxformer.experiments import seeds
from jaxformer.experiments.common import (
  Options,
  Result,
  load_config,
  pretrained_lm,
  quiet,
  train_cached,
)

QUESTION = 'Pretraining then fine-tuning resists overfitting on a few hundred examples.'
APPROACHES = ('fine-tuned', 'scratch', 'tf-idf')


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'sizes': [10, 30],
      'seeds': [0],
      'num_train_steps': 6,
      'eval_every_steps': 3,
      'patience': 2,
      'batch_size': 8,
    }
  # 40 steps of 8 passages: a fixed, small compute budget per run (on the default LM the 30
  # runs trained for about 18 minutes of the experiment's 27 on one core of a 2-core VM). 10 per
  # class is then ~10 epochs, 'all' a twentieth of one.
  return {
    'sizes': [10, 30, 100, 300, 0],
    'seeds': [0, 1, 2],
    'num_train_steps': 40,
    'eval_every_steps': 10,
    'patience': 2,
    'batch_size': 8,
  }


def arm_config(approach: str, lm_dir: str, lm: dict, size: int, seed: int, s: dict):
  c = load_config('genre_finetune' if approach == 'fine-tuned' else 'genre_scratch')
  model = dict(lm['model'])
  if approach == 'fine-tuned':
    c.init_from = os.path.abspath(lm_dir)
    # Plain full fine-tuning at genre_finetune's learning rate: the config's per-group rates
    # (backbone_lr_multiplier, head_only_steps) stay neutral, as in the published measurement,
    # which was designed when those options still crashed the loop's optimizer-sharding setup.
    c.backbone_lr_multiplier = 1.0
    c.head_only_steps = 0
  else:
    model['vocab_size'] = 0  # from its own tokenizer, trained like the LM's
    c.dataset.tokenizer = lm['dataset']['tokenizer']
    c.dataset.vocab_size = lm['dataset']['vocab_size']
  for key, value in model.items():
    c.model[key] = value
  c.model.scan_layers, c.model.remat = True, 'none'
  c.dataset.train_split = 'train' if 0 < size <= 100 else 'train_full'
  c.dataset.examples_per_class = size
  c.dataset.test_split = ''  # the test set is scored once, below
  c.seed = seed
  c.batch_size = s['batch_size']
  c.num_train_steps = s['num_train_steps']
  c.warmup_steps = min(c.warmup_steps, s['num_train_steps'] // 5)
  c.eval_every_steps = c.checkpoint_every_steps = c.log_every_steps = s['eval_every_steps']
  c.early_stopping.patience = s['patience']
  c.early_stopping.monitor = 'loss'  # this experiment studies validation loss
  c.restore_best = True
  return quiet(c)


@functools.lru_cache(maxsize=4)
def _predict_fn(cfg, num_classes: int, pooling: str):
  import jax
  import jax.numpy as jnp

  from jaxformer.models import Classifier

  model = Classifier(cfg, num_classes=num_classes, pooling=pooling)
  return jax.jit(lambda params, tokens: jnp.argmax(model.apply({'params': params}, tokens), -1))


def test_balanced_accuracy(workdir: str) -> float:
  """Balanced accuracy on the genre test split (held-out plays) of a classify run's best weights."""
  from jaxformer.checkpoint import load_pretrained
  from jaxformer.data import build_task_data, load_tokenizer

  pre = load_pretrained(workdir)
  data = build_task_data(
    {'name': 'jaxformer_genre'},
    task='classify',
    max_len=pre.model_config.max_len,
    batch_size=64,
    seed=0,
    tokenizer=load_tokenizer(pre.tokenizer_dir),
  )
  predict = _predict_fn(pre.model_config, int(pre.num_classes), pre.config.get('pooling', 'mean'))
  labels, preds = [], []
  for batch in data.eval_batches('test'):
    real = batch['weights'] > 0
    preds.append(np.asarray(predict(pre.params, batch['inputs']))[real])
    labels.append(batch['targets'][real])
  return metrics.balanced_accuracy(np.concatenate(labels), np.concatenate(preds))


def tfidf_balanced_accuracy(size: int, seed: int) -> float | None:
  """TF-IDF + logistic regression on the same labelled subset; None without scikit-learn."""
  try:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
  except ImportError:
    return None
  from jaxformer.data import build_task_data

  split = 'train' if 0 < size <= 100 else 'train_full'
  data = build_task_data(
    {
      'name': 'jaxformer_genre',
      'tokenizer': 'byte',
      'train_split': split,
      'examples_per_class': size,
    },
    task='classify',
    max_len=8,
    batch_size=1,
    seed=seed,
  )
  examples = data.examples(split)
  train = [examples[i] for i in data.train_indices()]  # the subset the neural runs see
  test = data.examples('test')
  vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
  x_train = vectorizer.fit_transform([e['text'] for e in train])
  classifier = LogisticRegression(max_iter=2000, C=10.0)
  classifier.fit(x_train, [e['label'] for e in train])
  predictions = classifier.predict(vectorizer.transform([e['text'] for e in test]))
  return metrics.balanced_accuracy([e['label'] for e in test], predictions)


def run(opts: Options) -> Result:
  s = _settings(opts.quick)
  root = opts.runs_dir('pretraining')
  pretrained_lm(opts)  # trains the LM first if needed
  lm_dir = opts.lm_workdir()
  with open(os.path.join(lm_dir, 'config.json')) as f:
    lm = json.load(f)
  with open(os.path.join(lm_dir, 'summary.json')) as f:
    lm_summary = json.load(f)
  rows = []
  for size in s['sizes']:
    for seed in s['seeds']:
      for approach in ('fine-tuned', 'scratch'):
        trained = train_cached(
          arm_config(approach, lm_dir, lm, size, seed, s),
          root,
          f'{approach}-n{size or "all"}-seed{seed}',
        )
        summary = trained.summary
        rows.append(
          {
            'approach': approach,
            'per_class': size,
            'seed': seed,
            'test_balanced_accuracy': test_balanced_accuracy(trained.workdir),
            'best_val_loss': summary['best_val_loss'],
            'best_step': summary['best_step'],
            'stopped_early': summary['stopped_early'],
            'run_wall_s': summary['wall_s'],
            'cached': trained.cached,
          }
        )
      rows.append(
        {
          'approach': 'tf-idf',
          'per_class': size,
          'seed': seed,
          'test_balanced_accuracy': tfidf_balanced_accuracy(size, seed),
        }
      )
  table = _aggregate(s, rows)
  results = {
    'lm': {
      'workdir': lm_dir,
      'model': lm['model'],
      'val_loss': lm_summary.get('best_val_loss'),
      'train_wall_s': lm_summary.get('wall_s'),
      'steps': lm_summary.get('last_step'),
    },
    'runs': rows,
    'table': table,
    'tfidf_note': None
    if rows[-1]['test_balanced_accuracy'] is not None
    else "scikit-learn is not installed: pip install 'jaxformer[experiments]' "
    'for the TF-IDF baseline',
  }
  return Result(
    settings=s, results=results, answer=_answer(s, table, results), figures={'': _figure(s, table)}
  )


def _aggregate(s, rows) -> list[dict]:
  out = []
  for approach in APPROACHES:
    for size in s['sizes']:
      vals = [
        r['test_balanced_accuracy']
        for r in rows
        if r['approach'] == approach
        and r['per_class'] == size
        and r['test_balanced_accuracy'] is not None
      ]
      if vals:
        out.append({'approach': approach, 'per_class': size, **seeds.spread(vals)})
  return out


def _answer(s, table, results) -> str:
  get = {(r['approach'], r['per_class']): r for r in table}
  label = lambda n: 'all' if n == 0 else str(n)  # noqa: E731
  header = (
    '| per class | ' + ' | '.join(a for a in APPROACHES if (a, s['sizes'][0]) in get) + ' |\n'
  )
  header += '|---' * (header.count('|') - 1) + '|\n'
  lines = ''.join(
    f'| {label(n)} | '
    + ' | '.join(seeds.mean_std(get[(a, n)]) for a in APPROACHES if (a, n) in get)
    + ' |\n'
    for n in s['sizes']
  )
  gaps = [seeds.difference(get[('fine-tuned', n)], get[('scratch', n)]) for n in s['sizes']]
  text = (
    f'Test balanced accuracy on held-out plays (chance 0.333), mean ± std over {len(s["seeds"])} '
    f'seed(s):\n\n{header}{lines}\nFine-tuned minus scratch: '
    + '; '.join(f'{label(n)}/class {g}' for n, g in zip(s['sizes'], gaps))
    + '.'
  )
  if results['tfidf_note']:
    text += f' TF-IDF baseline skipped: {results["tfidf_note"]}.'
  else:
    text += ' Fine-tuned minus TF-IDF: ' + '; '.join(
      f'{label(n)}/class {seeds.difference(get[("fine-tuned", n)], get[("tf-idf", n)])}'
      for n in s['sizes']
    )
    text += '.'
  return text


def _figure(s, table):
  fig = plotting.figure(figsize=(7, 4.5))
  ax = fig.subplots()
  positions = {n: i for i, n in enumerate(s['sizes'])}
  for k, approach in enumerate(APPROACHES):
    rows = [r for r in table if r['approach'] == approach]
    if rows:
      x = [positions[r['per_class']] + 0.06 * (k - 1) for r in rows]
      ax.errorbar(
        x,
        [r['mean'] for r in rows],
        yerr=[r['std'] for r in rows],
        marker='o',
        capsize=3,
        label=approach,
      )
  ax.axhline(1 / 3, color='gray', ls=':', label='chance')
  ax.set_xticks(range(len(s['sizes'])), ['all' if n == 0 else str(n) for n in s['sizes']])
  ax.set_xlabel('labelled passages per class')
  ax.set_ylabel('test balanced accuracy (held-out plays)')
  ax.set_title(f'genre classification, mean ± std over {len(s["seeds"])} seed(s)', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig
