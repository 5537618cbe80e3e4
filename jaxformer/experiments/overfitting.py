"""overfitting: do dropout, weight decay and early stopping earn their place on a small corpus?

The small LM (common.small_lm_config) trains on a small slice of the training plays (the first
2% of every work, so every play is represented) for many epochs, five ways:
    none          no dropout, no weight decay, the last step's weights are kept
    dropout       dropout on embeddings and every residual branch
    weight decay  decoupled (AdamW) decay of the weight matrices
    both          both
    both + early  both, plus early stopping on validation loss, restoring the best weights
Each arm runs with seeds 0, 1, 2 (initialization, data order, dropout masks): the answer gives
mean ± std over them and says which gaps the seeds cannot tell apart (experiments.seeds).
Validation is the held-out plays, as in every Shakespeare run. The train curve is the training
loss as the loop logs it (with dropout active in the dropout arms).

The slice goes through the public 'text_files' dataset: one file holds the slice followed by the
held-out text, and val_fraction is set so that the held-out lines are exactly the validation split.
"""

from __future__ import annotations

import os

from jaxformer.experiments import seeds
from jaxformer.experiments.common import Options, Result, small_lm_config, train_cached, whole_split

QUESTION = 'Dropout in every layer, regularization, early stopping.'
ARMS = ('none', 'dropout', 'weight decay', 'both', 'both + early stopping')


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'fraction': 0.05,
      'arms': ['none', 'both + early stopping'],
      'seeds': [0, 1],  # two, so the quick path takes the spread too
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
    'seeds': [0, 1, 2],
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


def arm_config(arm: str, s: dict, quick: bool, corpus: str, val_fraction: float, seed: int = 0):
  config = small_lm_config(quick)
  config.seed = seed  # initialization, data order and dropout masks
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
    per_seed = []
    for seed in s['seeds']:
      trained = train_cached(
        arm_config(arm, s, opts.quick, corpus, val_fraction, seed),
        root,
        f'{arm.replace(" ", "_").replace("+", "and")}-seed{seed}',
      )
      per_seed.append(_seed_row(arm, seed, trained))
    rows.append(_arm_row(arm, per_seed))
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


def _seed_row(arm: str, seed: int, trained) -> dict:
  train_steps, train_loss = trained.curve('train')
  val_steps, val_loss = trained.curve('val')
  summary = trained.summary
  early = arm == 'both + early stopping'
  return {
    'seed': seed,
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
    # Early stopping restores its best weights; every other arm keeps its last ones.
    'kept_step': summary['best_step'] if early else summary['last_step'],
    'kept_val_loss': summary['best_val_loss'] if early else val_loss[-1],
    'whole_split_val_loss': whole_split(summary, 'loss'),  # the kept weights, all held-out text
    'run_wall_s': summary['wall_s'],
    'cached': trained.cached,
  }


def _arm_row(arm: str, per_seed: list[dict]) -> dict:
  """One arm over its seeds: the spread of each final number, and every seed's run."""
  keys = ('kept_val_loss', 'best_val_loss', 'final_val_loss', 'final_train_loss')
  return {
    'arm': arm,
    **{key: seeds.spread([r[key] for r in per_seed]) for key in keys},
    'whole_split_val_loss': seeds.spread_if_complete(r['whole_split_val_loss'] for r in per_seed),
    'runs': per_seed,
  }


def _answer(s, sizes, rows) -> str:
  steps = lambda rows, key: ', '.join(str(r[key]) for r in rows)  # noqa: E731
  header = (
    '| arm | weights kept (steps) -> val loss | best val loss (steps) | final val loss '
    '| final train loss |\n'
    '|---|---|---|---|---|\n'
  )
  table = ''.join(
    f'| {r["arm"]} | {"best" if r["arm"] == "both + early stopping" else "last"} '
    f'({steps(r["runs"], "kept_step")}) -> {seeds.mean_std(r["kept_val_loss"])} '
    f'| {seeds.mean_std(r["best_val_loss"])} ({steps(r["runs"], "best_step")}) '
    f'| {seeds.mean_std(r["final_val_loss"])} | {seeds.mean_std(r["final_train_loss"])} |\n'
    for r in rows
  )
  none = next(r for r in rows if r['arm'] == 'none')
  ranked = sorted(rows, key=lambda r: r['kept_val_loss']['mean'])
  best, runner_up = ranked[0], ranked[1]
  text = (
    f'Training on {sizes["train_chars"]:,} characters ({100 * s["fraction"]:.0f}% of the training '
    f'plays), validated on {_scored(sizes)} tokens ({sizes["validation_chars"]:,} characters) '
    'of held-out plays, '
    f'{s["num_train_steps"]} steps at most (up to {sizes["epochs"]:.1f} epochs of its '
    f'{sizes["train_tokens"]:,} tokens), each arm with seeds {", ".join(map(str, s["seeds"]))}; '
    f'losses are mean ± std over the seeds, steps are per seed.\n\n{header}{table}\n'
    'Without regularisation the validation loss bottoms out at step '
    f'{steps(none["runs"], "best_step")} ({seeds.mean_std(none["best_val_loss"])}) and ends at '
    f'{seeds.mean_std(none["final_val_loss"])} while the training loss falls to '
    f'{seeds.mean_std(none["final_train_loss"])}. Val loss of the weights kept, against no '
    'regularisation: '
    + '; '.join(
      f'{r["arm"]} {seeds.difference(r["kept_val_loss"], none["kept_val_loss"])}'
      for r in rows
      if r is not none
    )
    + f'. Best weights kept: {best["arm"]} ({seeds.mean_std(best["kept_val_loss"])}); the next, '
    f'{runner_up["arm"]}, is behind it by '
    f'{seeds.difference(runner_up["kept_val_loss"], best["kept_val_loss"])}.'
  )
  if all(r.get('whole_split_val_loss') for r in rows):
    whole = lambda r: r['whole_split_val_loss']  # noqa: E731
    text += (
      f" On all {sizes['validation_tokens']:,} held-out tokens (each run's last evaluation, of "
      f'the weights kept): none {seeds.mean_std(whole(none))}; '
      + '; '.join(
        f'{r["arm"]} {seeds.mean_std(whole(r))}, {seeds.difference(whole(r), whole(none))} '
        'against none'
        for r in rows
        if r is not none
      )
      + '.'
    )
  for r in rows:
    if r['arm'] == 'both + early stopping':
      stopped = [x['last_step'] for x in r['runs'] if x['stopped_early']]
      text += (
        f' Early stopping stopped {len(stopped)} of {len(r["runs"])} runs'
        + (f' (at step {", ".join(map(str, stopped))})' if stopped else '')
        + f' and restored step {steps(r["runs"], "best_step")}.'
      )
  return text


def _figure(rows):
  from jaxformer import plotting

  fig = plotting.figure(figsize=(8, 5))
  ax = fig.subplots()
  colors = plotting.default_colors()
  for color, r in zip(colors, rows):
    for k, run in enumerate(r['runs']):  # the first seed labelled and drawn full, the rest faint
      alpha = 1.0 if k == 0 else 0.35
      ax.plot(run['train_steps'], run['train_loss'], ls='--', color=color, alpha=0.7 * alpha)
      ax.plot(
        run['val_steps'],
        run['val_loss'],
        marker='.' if k == 0 else None,
        color=color,
        alpha=alpha,
        label=f'{r["arm"]} (val)' if k == 0 else None,
      )
      if r['arm'] == 'both + early stopping':
        ax.plot(
          [run['best_step']],
          [run['best_val_loss']],
          marker='*',
          ms=12,
          color=color,
          alpha=alpha,
          label='restored best' if k == 0 else None,
        )
  ax.set_xlabel('step (dashed: train, solid: validation)')
  ax.set_ylabel('loss (nats/token)')
  seed_count = len(rows[0]['runs'])
  ax.set_title(
    f'small corpus: train vs validation, {seed_count} seed(s) per arm (faint: later seeds)',
    fontsize=10,
  )
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return fig
