"""heads_dynamics: do heads differentiate during training, and when?

`heads` looks at one finished model. This follows every head through training: the default LM
(configs/shakespeare_lm.py, trained once into runs/experiments/shakespeare_lm with a checkpoint
kept every 100 steps, the run `heads` analyses too), or the checkpoints a --workdir run kept
(train it with --config.keep_every_steps=N). At each kept step, per head:
  entropy, previous_token, first_token, mean_distance
                  jaxformer.analysis.head_stats on the same validation windows every time;
  delta_loss      the validation loss increase when the head alone is removed (head_ablation);
  induction       the induction score on random tokens repeated once (induction_scores).
"Differentiate" is measured as the spread of the heads' entropies (their standard deviation):
at initialization every head attends almost uniformly, so the spread starts near zero. Step 0 is
measured, not assumed: no checkpoint holds it, so weights drawn at the model's initialization
scale (numpy_init) stand in for it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxformer import analysis, plotting
from jaxformer.experiments.common import (
  Options,
  Result,
  default_lm_config,
  eval_batches,
  lm_data,
  numpy_init,
  pretrained_lm,
)

QUESTION = 'Heads over training: do they differentiate, and when?'
STATS = ('entropy', 'previous_token', 'first_token', 'mean_distance')
# A share of attention on the previous token that marks such a head while it forms. Lower than
# heads' "over half" label: a head on its way (or one that also attends elsewhere) shows here.
PREVIOUS_TOKEN_HEAD = 0.2


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'stats_windows': 4,
      'ablation_batches': 1,
      'batch_size': 8,
      'induction_period': 8,
      'induction_batch': 4,
    }
  return {
    'stats_windows': 16,
    'ablation_batches': 2,
    'batch_size': 32,
    'induction_period': 100,
    'induction_batch': 8,
  }


def kept_steps(workdir: str) -> list[int]:
  """The steps of the history a run kept (keep_every_steps), oldest first, plus its last step;
  an error if the run kept no history (its best and newest checkpoints alone are not one)."""
  from jaxformer.checkpoint import Checkpointer

  every = kept_interval(workdir)
  with Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True) as ckpt:
    steps = sorted(ckpt.all_steps())
  history = [step for step in steps if every and step % every == 0]
  if len(history) < 2:
    raise ValueError(
      f'{workdir} kept no history of checkpoints (keep_every_steps={every}, steps {steps}); '
      'train it with --config.keep_every_steps=100 (or another interval) for heads_dynamics'
    )
  return sorted(set(history) | {steps[-1]})


def kept_interval(workdir: str) -> int:
  """The run's keep_every_steps (0: it kept no history)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    return int(json.load(f).get('keep_every_steps') or 0)


def coarse_history_hint(workdir: str) -> str | None:
  """What to do when the cached default LM kept fewer checkpoints than default_lm_config does
  now (a run cached before the interval went from 400 to 100 steps); None when it matches."""
  every = kept_interval(workdir)
  wanted = default_lm_config().keep_every_steps
  if every == wanted:
    return None
  return (
    f'{workdir} kept a checkpoint every {every} steps, the default LM now every {wanted}: move '
    'it away (or pass another --runs) to retrain it and follow the heads at the finer interval'
  )


def run(opts: Options) -> Result:
  from jaxformer.checkpoint import Checkpointer
  from jaxformer.models import DecoderLM

  s = _settings(opts.quick)
  pre = pretrained_lm(opts)
  cfg = pre.model_config
  workdir = opts.lm_workdir()
  steps = [0, *kept_steps(workdir)]
  if not (opts.workdir or opts.quick) and (hint := coarse_history_hint(workdir)):
    print(f'[experiments] {hint}', flush=True)
  data = lm_data(pre, s['batch_size'])
  tok = data.tokenizer
  windows = np.concatenate(
    [
      b['inputs']
      for b in eval_batches(data, 'validation', -(-s['stats_windows'] // s['batch_size']))
    ]
  )[: s['stats_windows']]
  batches = eval_batches(data, 'validation', s['ablation_batches'])
  period = min(s['induction_period'], cfg.max_len // 2)
  repeated = analysis.repeated_random_tokens(
    s['induction_batch'], period, tok.vocab_size, exclude=(tok.pad_id, tok.bos_id, tok.eos_id)
  )

  per_step = []
  with Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True) as ckpt:
    for step in steps:
      if step == 0:
        params = numpy_init(DecoderLM(cfg), windows[:1])
      else:
        _, params = ckpt.restore_params(step)
      stats = analysis.head_stats(analysis.capture(cfg, params, windows).attention)
      ablation = analysis.head_ablation(cfg, params, batches)
      induction = analysis.induction_scores(
        analysis.capture(cfg, params, repeated).attention, period
      )
      per_step.append(
        {
          'step': step,
          **{k: stats[k] for k in STATS},
          'delta_loss': ablation['single_head'] - ablation['baseline'],
          'baseline_loss': ablation['baseline'],
          'induction': induction,
        }
      )
  results = {
    'model': {
      'workdir': workdir,
      'num_layers': cfg.num_layers,
      'num_heads': cfg.num_heads,
      'd_model': cfg.d_model,
    },
    'steps': steps,
    'uniform_entropy': float(stats['uniform_entropy']),
    'per_step': per_step,
  }
  return Result(
    settings=s, results=results, answer=_answer(results), figures={'': _figure(results)}
  )


def _series(r: dict, key: str) -> np.ndarray:
  """[steps, layers, heads] of one statistic."""
  return np.stack([np.asarray(p[key], np.float64) for p in r['per_step']])


def _name(flat: int, heads: int) -> str:
  return f'L{flat // heads}H{flat % heads}'


def _answer(r: dict) -> str:
  steps, heads = r['steps'], r['model']['num_heads']
  entropy = _series(r, 'entropy').reshape(len(steps), -1)
  spread = entropy.std(axis=1)
  half = next(i for i, x in enumerate(spread) if x >= 0.5 * spread.max())
  prev = _series(r, 'previous_token').reshape(len(steps), -1)
  crossed = {
    _name(h, heads): steps[int(np.argmax(prev[:, h] > PREVIOUS_TOKEN_HEAD))]
    for h in range(prev.shape[1])
    if prev[-1, h] > PREVIOUS_TOKEN_HEAD
  }
  delta = _series(r, 'delta_loss').reshape(len(steps), -1)
  top = delta.argmax(axis=1)
  settled = next(i for i in range(len(steps)) if (top[i:] == top[-1]).all())
  induction = _series(r, 'induction').reshape(len(steps), -1)
  best = np.unravel_index(int(induction.argmax()), induction.shape)
  prev_text = (
    ', '.join(f'{name} from step {step}' for name, step in sorted(crossed.items()))
    if crossed
    else 'none'
  )
  return (
    f'Steps: 0 (untrained weights), then the kept {", ".join(map(str, steps[1:]))}. Spread of '
    "the heads' attention entropy (standard deviation over heads): "
    f'{spread[0]:.2f} nats at step 0, {spread[-1]:.2f} at step '
    f'{steps[-1]} (uniform attention: {r["uniform_entropy"]:.2f}); it first reaches half of its '
    f'largest value ({spread.max():.2f}) at step {steps[half]}. Entropy range at step 0 '
    f'{entropy[0].min():.2f}-{entropy[0].max():.2f}, at the last '
    f'{entropy[-1].min():.2f}-{entropy[-1].max():.2f}.\n\n'
    f'Previous-token heads at the end (over {PREVIOUS_TOKEN_HEAD:.0%} of their attention on the '
    f'previous token), with the first step above that line: {prev_text}.\n\n'
    f'Ablation: the most important head is {_name(int(top[-1]), heads)} at the end '
    f'({delta[-1].max():+.3f} nats), and has been since step {steps[settled]}; the loss increase '
    f'of the most important head went {delta[0].max():+.3f} -> {delta[-1].max():+.3f}.\n\n'
    f'Induction: the highest score at any kept step is {induction.max():.3f} '
    f'({_name(int(best[1]), heads)} at step {steps[int(best[0])]}).'
  )


def _figure(r: dict):
  steps, layers, heads = r['steps'], r['model']['num_layers'], r['model']['num_heads']
  fig = plotting.figure(figsize=(15, 8))
  axes = fig.subplots(2, 3).ravel()
  colors = plotting.default_colors()
  panels = (
    ('entropy', 'attention entropy (nats)'),
    ('previous_token', 'share on the previous token'),
    ('first_token', 'share on the first token'),
    ('mean_distance', 'mean distance attended (tokens)'),
    ('delta_loss', 'loss increase when removed alone (nats)'),
    ('induction', 'induction score'),
  )
  styles = ('-', '--', ':', '-.')
  for ax, (key, title) in zip(axes, panels, strict=True):
    values = _series(r, key)
    for layer in range(layers):
      for head in range(heads):
        ax.plot(
          steps,
          values[:, layer, head],
          color=colors[layer % len(colors)],
          linestyle=styles[head % len(styles)],
          label=f'L{layer}H{head}',
        )
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('training step')
    ax.grid(alpha=0.3)
  axes[0].axhline(r['uniform_entropy'], color='grey', linewidth=0.8)
  axes[-1].legend(fontsize=6, ncol=layers, title='colour: layer, line: head', title_fontsize=6)
  return fig
