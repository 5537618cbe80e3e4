"""overfitting: do dropout, weight decay and early stopping earn their place on a small corpus?

The small LM (common.small_lm_config) trains on a small slice of the training plays (the first
2% of every work, so every play is represented) for many epochs, five ways:
    none          no dropout, no weight decay, the last step's weights are kept
    dropout       dropout on embeddings and every residual branch
    weight decay  decoupled (AdamW) decay of the weight matrices
    both          both
    both + early  both, plus early stopping on validation loss, restoring the best weights
Validation is the held-out plays, as in every Shakespeare run. The train curve is the training
loss as the loop logs it (with dropout active in the dropout arms).

The slice goes through the public 'text_files' dataset: one file holds the slice followed by the
held-out text, and val_fraction is set so that the held-out lines are exactly the validation split.
"""

from __future__ import annotations

import os

from jaxformer.experiments.common import Options, Result, small_lm_config, train_cached

QUESTION = 'Dropout in every layer, regularization, early stopping.'
ARMS = ('none', 'dropout', 'weight decay', 'both', 'both + early stopping')


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'fraction': 0.05,
      'arms': ['none', 'both + early stopping'],
      'dropout': 0.2,
      'weight_decay': 1.0,
      'patience': 2,
      'num_train_steps': 12,
      'eval_every_steps': 3,
      'validation_chars': 20_000,
    }
  # 2% of the plays (~30k tokens) for 600 steps of 16 x 64 tokens: about 20 epochs. (At 5%,
  # this small model was still improving on validation after 8 epochs: no overfitting to see.)
  return {
    'fraction': 0.02,
    'arms': list(ARMS),
    'dropout': 0.2,
    'weight_decay': 1.0,
    'patience': 3,
    'num_train_steps': 600,
    'eval_every_steps': 25,
    'validation_chars': 200_000,
  }


def write_slice(directory: str, fraction: float, validation_chars: int) -> tuple[str, float, dict]:
  """Writes slice + held-out text to DIRECTORY/corpus.txt; returns (path, val_fraction, sizes)."""
  from jaxformer.data import build_task_data

  data = build_task_data(
    {'name': 'jaxformer_shakespeare', 'tokenizer': 'byte'},
    task='lm',
    max_len=32,
    batch_size=1,
    seed=0,
  )
  train = []
  for work in data.examples('train'):
    lines = work['text'].splitlines(keepends=True)
    train += lines[: max(1, int(len(lines) * fraction))]
  held_out = ''.join(w['text'] for w in data.examples('validation'))[:validation_chars]
  held_out = held_out[: held_out.rfind('\n') + 1].splitlines(keepends=True)
  train = [line if line.endswith('\n') else line + '\n' for line in train]
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, 'corpus.txt')
  text = ''.join(train + held_out)
  if not os.path.exists(path) or open(path, encoding='utf-8').read() != text:
    with open(path, 'w', encoding='utf-8') as f:
      f.write(text)
  total = len(text.splitlines(keepends=True))
  sizes = {
    'train_chars': sum(map(len, train)),
    'validation_chars': sum(map(len, held_out)),
    'train_lines': len(train),
    'validation_lines': len(held_out),
  }
  return path, len(held_out) / total, sizes


def arm_config(arm: str, s: dict, quick: bool, corpus: str, val_fraction: float):
  config = small_lm_config(quick)
  config.dataset.name = 'text_files'
  config.dataset.files = corpus
  config.dataset.val_fraction = val_fraction
  config.dataset.eval_split = 'validation'
  config.num_train_steps = s['num_train_steps']
  config.eval_every_steps = s['eval_every_steps']
  config.checkpoint_every_steps = s['eval_every_steps']
  config.log_every_steps = s['eval_every_steps']
  config.eval_steps = 0 if quick else 16
  config.model.dropout_rate = (
    s['dropout'] if arm in ('dropout', 'both', 'both + early stopping') else 0.0
  )
  config.weight_decay = (
    s['weight_decay'] if arm in ('weight decay', 'both', 'both + early stopping') else 0.0
  )
  early = arm == 'both + early stopping'
  config.early_stopping.patience = s['patience'] if early else 0
  config.restore_best = early  # the other arms keep their last weights: that is what overfits
  return config


def run(opts: Options) -> Result:
  s = _settings(opts.quick)
  root = opts.runs_dir('overfitting')
  corpus, val_fraction, sizes = write_slice(
    os.path.join(root, 'corpus'), s['fraction'], s['validation_chars']
  )
  rows = []
  for arm in s['arms']:
    trained = train_cached(
      arm_config(arm, s, opts.quick, corpus, val_fraction),
      root,
      arm.replace(' ', '_').replace('+', 'and'),
    )
    train_steps, train_loss = trained.curve('train')
    val_steps, val_loss = trained.curve('val')
    summary = trained.summary
    rows.append(
      {
        'arm': arm,
        'train_steps': train_steps,
        'train_loss': train_loss,
        'val_steps': val_steps,
        'val_loss': val_loss,
        'best_val_loss': summary['best_val_loss'],
        'best_step': summary['best_step'],
        'final_val_loss': val_loss[-1],
        'final_train_loss': train_loss[-1],
        'last_step': summary['last_step'],
        'stopped_early': summary['stopped_early'],
        'kept_weights': f'best (step {summary["best_step"]})'
        if arm == 'both + early stopping'
        else f'last (step {summary["last_step"]})',
        'kept_val_loss': summary['best_val_loss']
        if arm == 'both + early stopping'
        else val_loss[-1],
        'run_wall_s': summary['wall_s'],
        'cached': trained.cached,
      }
    )
  base = small_lm_config(opts.quick)
  sizes['train_tokens'], sizes['validation_tokens'] = _tokens(
    trained.workdir, corpus, sizes['train_lines']
  )
  evaluated = arm_config(s['arms'][0], s, opts.quick, corpus, val_fraction)
  sizes['scored_tokens'] = min(  # an evaluation reads the first eval_steps batches (0: all)
    sizes['validation_tokens'],
    evaluated.eval_steps * evaluated.batch_size * evaluated.model.max_len
    or sizes['validation_tokens'],
  )
  sizes['epochs'] = (
    s['num_train_steps'] * base.batch_size * base.model.max_len / sizes['train_tokens']
  )
  settings = dict(
    s,
    sizes=sizes,
    d_model=base.model.d_model,
    num_layers=base.model.num_layers,
    max_len=base.model.max_len,
    batch_size=base.batch_size,
    learning_rate=base.learning_rate,
    vocab_size=base.dataset.vocab_size,
  )
  return Result(
    settings=settings,
    results={'arms': rows},
    answer=_answer(s, sizes, rows),
    figures={'': _figure(rows)},
  )


def _tokens(workdir: str, corpus: str, train_lines: int) -> tuple[int, int]:
  """Tokens in the training slice and in the held-out text after it, with the runs' tokenizer."""
  from jaxformer.data import load_tokenizer

  with open(corpus, encoding='utf-8') as f:
    lines = f.read().splitlines(keepends=True)
  tokenizer = load_tokenizer(os.path.join(workdir, 'tokenizer'))
  return tuple(
    len(tokenizer.encode(''.join(part))) for part in (lines[:train_lines], lines[train_lines:])
  )


def _scored(sizes) -> str:
  scored, total = sizes['scored_tokens'], sizes['validation_tokens']
  return f'all {total:,}' if scored >= total else f'the first {scored:,} of the {total:,}'


def _answer(s, sizes, rows) -> str:
  header = (
    '| arm | best val loss (step) | final val loss | final train loss '
    '| weights kept -> val loss |\n'
    '|---|---|---|---|---|\n'
  )
  table = ''.join(
    f'| {r["arm"]} | {r["best_val_loss"]:.3f} ({r["best_step"]}) | {r["final_val_loss"]:.3f} | '
    f'{r["final_train_loss"]:.3f} | {r["kept_weights"]} -> {r["kept_val_loss"]:.3f} |\n'
    for r in rows
  )
  none = next(r for r in rows if r['arm'] == 'none')
  best = min(rows, key=lambda r: r['kept_val_loss'])
  early = [r for r in rows if r['arm'] == 'both + early stopping']
  text = (
    f'Training on {sizes["train_chars"]:,} characters ({100 * s["fraction"]:.0f}% of the training '
    f'plays), validated on {_scored(sizes)} tokens ({sizes["validation_chars"]:,} characters) '
    'of held-out plays, '
    f'{s["num_train_steps"]} steps at most (up to {sizes["epochs"]:.1f} epochs of its '
    f'{sizes["train_tokens"]:,} tokens).\n\n{header}{table}\nWithout regularisation the validation '
    f'loss bottoms out at step {none["best_step"]} ({none["best_val_loss"]:.3f}) and ends at '
    f'{none["final_val_loss"]:.3f} while the training loss falls to '
    f'{none["final_train_loss"]:.3f}. Best weights kept: {best["arm"]} '
    f'({best["kept_val_loss"]:.3f}).'
  )
  if early:
    e = early[0]
    text += (
      ' Early stopping '
      f'{"stopped at step " + str(e["last_step"]) if e["stopped_early"] else "never triggered"} '
      f'and restored step {e["best_step"]}.'
    )
  return text


def _figure(rows):
  from jaxformer import plotting

  fig = plotting.figure(figsize=(8, 5))
  ax = fig.subplots()
  colors = plotting.default_colors()
  for color, r in zip(colors, rows):
    ax.plot(r['train_steps'], r['train_loss'], ls='--', color=color, alpha=0.7)
    ax.plot(r['val_steps'], r['val_loss'], marker='.', color=color, label=f'{r["arm"]} (val)')
    if r['arm'] == 'both + early stopping':
      ax.axvline(r['last_step'], color=color, ls=':', alpha=0.8)
      ax.plot(
        [r['best_step']],
        [r['best_val_loss']],
        marker='*',
        ms=14,
        color=color,
        label='restored best',
      )
  ax.set_xlabel('step (dashed: train, solid: validation)')
  ax.set_ylabel('loss (nats/token)')
  ax.set_title('small corpus: train vs validation', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig
