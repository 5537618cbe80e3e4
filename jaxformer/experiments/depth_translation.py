"""depth_translation: do a translation model's layers go lexical -> semantic -> task?

The study note states its layer hierarchy for machine translation; `depth` probes an LM only.
This probes the number-word model (configs/numbers_translate.py, English words -> German words,
"twenty-three thousand, four hundred and five" -> "dreiundzwanzigtausendvierhundertfünf"),
through jaxformer.analysis_seq2seq: the residual stream after the embeddings and after every
layer of both stacks, the decoder teacher-forced on the reference translation.

Linear probes (analysis.train_probe), balanced accuracy per layer:
  token        per position: the source piece there (encoder), the current target piece (decoder)
  next_token   per position, decoder only: the piece the model must write next (its own task)
  units, tens, hundreds
               the number's digits (0-9), from the mean over a sequence's real positions. Pooled,
               because a digit is a property of the whole number, not of a position: in "five
               thousand, four hundred and five" no single piece says which "five" is the units
               digit, "fifteen" holds two digits, and a zero digit has no word at all. The mean
               of the embeddings is a bag of (piece + position) vectors, from which a linear probe
               reads which pieces occur but hardly which role each plays; what the layers add over
               it is the binding of words to digit places. The decoder's digits are pooled over
               its scored positions; its input is the German reference, which spells the number
               too, so they mix what it reads from the target with what cross-attention brings.
  thousands    whether the number is >= 1000 (pooled too).
Probes train on the validation split and are tested on the test split (no number is in both).
Both hold only numbers >= 1000, so `thousands` adds numbers below 1000 from the train split,
disjoint halves to each side: the model trained on those, so they serve this probe only. Token
probes keep the top_k commonest pieces of the probe-training side. The same probes on the same
architecture with random weights are the control.
"""

from __future__ import annotations

import numpy as np

from jaxformer import analysis, analysis_seq2seq, plotting
from jaxformer.experiments.common import (
  Options,
  Result,
  load_config,
  numpy_init,
  quiet,
  train_cached,
)
from jaxformer.experiments.number_words import number_labels, number_value

QUESTION = (
  'On a translation model: do lower layers hold lexical patterns, middle layers semantics, '
  'top layers the task?'
)
DIGITS = ('units', 'tens', 'hundreds')
PROPERTIES = {
  'encoder': ('token', *DIGITS, 'thousands'),
  'decoder': ('token', 'next_token', *DIGITS, 'thousands'),
}
PER_POSITION = ('token', 'next_token')
# A layer counts as reaching a probe's best when within TOLERANCE of it: about two standard
# errors of a difference of two balanced accuracies near 0.8 on 1000 test numbers. Training adds
# something when the trained model beats the random-weights control by LEARNED.
TOLERANCE = 0.03
LEARNED = 0.05


def _settings(quick: bool) -> dict:
  if quick:
    return {
      'probe_examples': 48,
      'small_numbers': 32,
      'top_k': 8,
      'probe_steps': 100,
      'batch_size': 64,
    }
  return {
    'probe_examples': 1000,  # per side: the whole validation and test splits
    'small_numbers': 400,  # numbers below 1000 from the train split, half to each side
    'top_k': 30,
    'probe_steps': 300,
    'batch_size': 128,
  }


def translation_config(quick: bool):
  """configs/numbers_translate.py (en -> de), or a 2+2-layer d=32 sibling for --quick."""
  config = load_config('numbers_translate')
  if quick:
    config.model.d_model = 32
    config.model.num_heads = 2
    config.model.num_encoder_layers = 2
    config.model.num_decoder_layers = 2
    config.batch_size = 32
    config.num_train_steps = 12  # the probes, not the model's quality, are under test
    config.warmup_steps = 4
    config.eval_every_steps = 12
    config.checkpoint_every_steps = 12
    config.log_every_steps = 4
    config.eval_steps = 2
  return quiet(config)


def translation_run(opts: Options):
  """(workdir, Pretrained) of --workdir, or of a cached configs/numbers_translate.py run."""
  from jaxformer.checkpoint import load_pretrained

  workdir = opts.workdir
  if workdir is None:
    run = train_cached(translation_config(opts.quick), opts.runs_dir('translate'), 'numbers_en_de')
    workdir = run.workdir
  pre = load_pretrained(workdir)
  name = pre.config['dataset']['name']
  if pre.task != 'translate' or not name.startswith('jaxformer_numbers/'):
    raise ValueError(
      f'{workdir} is a {pre.task!r} run on {name!r}; depth_translation needs a translate run on '
      'jaxformer_numbers (English number words), e.g. one of configs/numbers_translate.py'
    )
  return workdir, pre


# ----------------------------------------------------------------------------- labels


def _rows(data, split: str, indices) -> dict:
  """The pipeline's rows {'inputs', 'decoder_inputs', 'targets', 'weights'} [N, L] at `indices`
  (sorted) of `split`, plus 'number' [N], parsed from each source."""
  wanted, size, parts = np.sort(np.asarray(indices)), data.batch_size, []
  for b, batch in enumerate(data.eval_batches(split)):
    if b * size > wanted[-1]:
      break
    here = wanted[(wanted >= b * size) & (wanted < (b + 1) * size)] - b * size
    parts.append({k: v[here] for k, v in batch.items()})
  rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  sources = [data.source.example(split, int(i))['source'] for i in wanted]
  rows['number'] = np.asarray([number_value(s) for s in sources])
  return rows


def probe_rows(data, split: str, count: int, small: list) -> dict:
  """The first `count` examples of `split` (held_out) followed by the train examples `small`."""
  held = _rows(data, split, np.arange(min(count, data.num_rows(split))))
  extra = _rows(data, 'train', small)
  rows = {k: np.concatenate([held[k], extra[k]]) for k in held}
  rows['held_out'] = np.arange(len(rows['number'])) < len(held['number'])
  return rows


def small_numbers(data, count: int, seed: int = 0) -> tuple[list, list]:
  """Two disjoint sets of train-split indices whose numbers are below 1000, count // 2 each."""
  n = data.num_rows('train')
  below = [i for i in range(n) if number_value(data.source.example('train', i)['source']) < 1000]
  picked = np.random.default_rng(seed).permutation(below)[:count].tolist()
  return picked[: count // 2], picked[count // 2 :]


# ----------------------------------------------------------------------------- probes


def features(encoder, decoder, rows: dict, bos_id: int) -> dict:
  """{stack: {property: (features [layers + 1, N, D], labels [N])}} for one side's rows.

  encoder [enc_layers + 1, R, S, D] and decoder [dec_layers + 1, R, T, D] are the states of the
  R rows. Only real positions are used: source tokens != 0, and decoder positions with a scored
  prediction (weights > 0; the current piece leaves out BOS).
  """
  held = rows['held_out'][:, None]
  src_real = rows['inputs'] != 0
  tgt_real = rows['weights'] > 0
  current = tgt_real & (rows['decoder_inputs'] != bos_id)

  def per_position(hidden, mask, ids):
    mask = mask & held
    return analysis_seq2seq.real_positions(hidden, mask), ids[mask]

  out = {
    'encoder': {'token': per_position(encoder, src_real, rows['inputs'])},
    'decoder': {
      'token': per_position(decoder, current, rows['decoder_inputs']),
      'next_token': per_position(decoder, tgt_real, rows['targets']),
    },
  }
  labels = number_labels(rows['number'])
  only_held = rows['held_out']
  for stack, hidden, real in (('encoder', encoder, src_real), ('decoder', decoder, tgt_real)):
    pooled = analysis_seq2seq.mean_over_real(hidden, real)
    for name in DIGITS:
      out[stack][name] = (pooled[:, only_held], labels[name][only_held])
    out[stack]['thousands'] = (pooled, labels['thousands'])
  return out


def _commonest(train_ids, test_ids, top_k: int):
  """Labels 0..k-1 for the top_k commonest pieces of train_ids; masks keep only those pieces."""
  values, counts = np.unique(train_ids, return_counts=True)
  top = values[np.argsort(-counts, kind='stable')[:top_k]]
  index = {int(t): k for k, t in enumerate(top)}
  relabel = lambda ids: np.asarray([index.get(int(t), -1) for t in ids])  # noqa: E731
  a, b = relabel(train_ids), relabel(test_ids)
  return (a >= 0, a), (b >= 0, b)


def probe_layers(train: dict, test: dict, top_k: int, steps: int) -> tuple[dict, dict, dict]:
  """({stack: {property: [layers + 1] balanced test accuracy}}, chance levels, example counts)."""
  accuracy, chance, counts = {}, {}, {}
  for stack, props in PROPERTIES.items():
    accuracy[stack], chance[stack], counts[stack] = {}, {}, {}
    for name in props:
      (xa, ya), (xb, yb) = train[stack][name], test[stack][name]
      if name in PER_POSITION:
        (ka, ya), (kb, yb) = _commonest(ya, yb, top_k)
        xa, xb = xa[:, ka], xb[:, kb]
        ya, yb = ya[ka], yb[kb]
      accuracy[stack][name] = [
        analysis.train_probe(a, ya, b, yb, steps=steps)['balanced_accuracy'] for a, b in zip(xa, xb)
      ]
      chance[stack][name] = 1.0 / len(np.unique(yb))
      counts[stack][name] = [int(len(ya)), int(len(yb))]
  return accuracy, chance, counts


# ----------------------------------------------------------------------------- experiment


def run(opts: Options) -> Result:
  from jaxformer.data import build_task_data, load_tokenizer
  from jaxformer.models import EncoderDecoder

  s = _settings(opts.quick)
  workdir, pre = translation_run(opts)
  cfg = pre.model_config
  tokenizer = load_tokenizer(pre.tokenizer_dir)
  data = build_task_data(
    pre.config['dataset'],
    task='translate',
    max_len=cfg.max_len,
    batch_size=s['batch_size'],
    seed=0,
    tokenizer=tokenizer,
  )
  small_train, small_test = small_numbers(data, s['small_numbers'])
  splits = {'train': 'validation', 'test': 'test'}  # probe side -> dataset split
  sides = {
    side: probe_rows(data, splits[side], s['probe_examples'], small)
    for side, small in (('train', small_train), ('test', small_test))
  }
  first = sides['train']
  random_params = numpy_init(EncoderDecoder(cfg), first['inputs'][:1], first['decoder_inputs'][:1])
  probes = {}
  for label, params in (('trained', pre.params), ('random_init', random_params)):
    feats = {}
    for side, rows in sides.items():
      enc, dec = analysis_seq2seq.hidden_states(
        cfg, params, rows['inputs'], rows['decoder_inputs'], s['batch_size']
      )
      feats[side] = features(enc, dec, rows, tokenizer.bos_id)
    probes[label], chance, counts = probe_layers(
      feats['train'], feats['test'], s['top_k'], s['probe_steps']
    )
  results = {
    'model': {
      'workdir': workdir,
      'dataset': pre.config['dataset']['name'],
      'step': pre.step,
      'val_loss': pre.val_loss,
      'num_encoder_layers': cfg.num_encoder_layers,
      'num_decoder_layers': cfg.num_decoder_layers,
      'd_model': cfg.d_model,
    },
    'probes': probes,
    'chance_balanced': chance,
    'probe_examples': counts,  # [probe-train, probe-test] rows per property
  }
  return Result(
    settings=s, results=results, answer=_answer(results), figures={'': _figure(results)}
  )


# ----------------------------------------------------------------------------- answer and figure


def first_best(values, tolerance: float = TOLERANCE) -> int:
  """The lowest layer whose accuracy is within `tolerance` of the best layer's."""
  return int(np.argmax(np.asarray(values) >= max(values) - tolerance))


def _where(layer: int, top: int) -> str:
  return 'the embeddings' if layer == 0 else f'layer {layer} of {top}'


def _lexical(stack: str, tok: list) -> str:
  fades = tok[-1] < tok[0] - TOLERANCE
  return (
    f'**Lexical, low ({stack}):** the current piece is read at {tok[0]:.2f} from the embeddings '
    f'and {tok[-1]:.2f} from the top layer: '
    + (
      'it fades with depth, as the picture says.'
      if fades
      else 'it stays readable at the top, so lexical identity is not confined to the low '
      'layers (the residual stream carries it up).'
    )
  )


def _semantic(stack: str, trained: dict, control: dict) -> str:
  n = len(trained['units']) - 1
  parts, learned = [], []
  for name in DIGITS:
    vals, best = trained[name], first_best(trained[name])
    gain = max(vals) - max(control[name])
    parts.append(
      f'{name} {vals[0]:.2f} -> {max(vals):.2f} (reached at {_where(best, n)}; '
      f'random weights {max(control[name]):.2f})'
    )
    if gain >= LEARNED:
      learned.append((name, best))
  if not learned:
    verdict = (
      'no digit is read better than from random weights: this stack shows no learned '
      "semantic layer (a random network's nonlinear mixing of pieces and positions is itself "
      'a rich feature set for a pooled probe).'
    )
  else:
    where = ', '.join(f'{name} at {_where(best, n)}' for name, best in learned)
    middle = all(0 < best < n for _, best in learned)
    verdict = f'training adds over random weights for {where}' + (
      ': in the middle, as the picture says.'
      if middle
      else '; the picture puts semantics in the middle, and this is not only there.'
    )
  return f'**Semantic, middle ({stack}):** ' + '; '.join(parts) + f'. So {verdict}'


def _verdicts(r) -> list[str]:
  t, c = r['probes']['trained'], r['probes']['random_init']
  out = [_lexical(stack, t[stack]['token']) for stack in PROPERTIES]
  out += [_semantic(stack, t[stack], c[stack]) for stack in PROPERTIES]
  nxt, n = t['decoder']['next_token'], len(t['decoder']['next_token']) - 1
  best = first_best(nxt)
  out.append(
    f'**Task, top:** the next target piece is read at {nxt[0]:.2f} from the decoder embeddings '
    f'and at {max(nxt):.2f} from {_where(best, n)} on (random weights '
    f'{max(c["decoder"]["next_token"]):.2f} at best): '
    + (
      'the task is done by the top layer, as the picture says.'
      if best == n
      else 'the task is done in the upper layers, as the picture says, and the last layer only '
      'keeps it.'
      if best > n / 2
      else 'the task is done low in the stack, not at the top as the picture says.'
    )
  )
  th, th_control = t['encoder']['thousands'], c['encoder']['thousands']
  lexical = th[0] >= 0.95 and max(th_control) >= 0.95
  out.append(
    f'**Magnitude:** "is it >= 1000" is read at {th[0]:.2f} from the encoder embeddings '
    f'(random weights {max(th_control):.2f} at best): '
    + (
      'it is lexical here (the word "thousand" and the length give it away), so it cannot '
      'separate the layers.'
      if lexical
      else 'the layers add to what the words show.'
    )
  )
  return out


def _answer(r) -> str:
  t, c, chance = r['probes']['trained'], r['probes']['random_init'], r['chance_balanced']
  m = r['model']
  lines = []
  for stack, props in PROPERTIES.items():
    lines.append(f'\n{stack.capitalize()} (layer 0 = embeddings):\n')
    for name in props:
      vals = ' '.join(f'{v:.2f}' for v in t[stack][name])
      ctrl = ' '.join(f'{v:.2f}' for v in c[stack][name])
      lines.append(f'- {name}: {vals} (random weights: {ctrl}; chance {chance[stack][name]:.2f})')
  return (
    f'Balanced test accuracy of linear probes on the {m["num_encoder_layers"]}+'
    f'{m["num_decoder_layers"]}-layer translation model ({m["dataset"]}, d_model {m["d_model"]}), '
    'trained on validation-split numbers, tested on test-split numbers:\n'
    + '\n'.join(lines)
    + f'\n\nA layer "reaches" a value when it is within {TOLERANCE} of the best layer.\n\n'
    + '\n'.join(f'- {v}' for v in _verdicts(r))
  )


def _figure(r):
  fig = plotting.figure(figsize=(13, 4.5))
  axes = fig.subplots(1, 2)
  colors = dict(zip(PROPERTIES['decoder'], plotting.default_colors()))
  for ax, (stack, props) in zip(axes, PROPERTIES.items()):
    for name in props:
      vals = r['probes']['trained'][stack][name]
      ax.plot(range(len(vals)), vals, marker='o', color=colors[name], label=name)
      ax.plot(range(len(vals)), r['probes']['random_init'][stack][name], ls=':', color=colors[name])
    ax.set_xticks(range(len(vals)), ['emb'] + [str(k) for k in range(1, len(vals))])
    ax.set_xlabel(f'{stack} layer (solid: trained, dotted: random weights)')
    ax.set_ylabel('probe balanced accuracy (test)')
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f'what a linear probe reads from each {stack} layer', fontsize=10)
  axes[1].legend(fontsize=8)
  return fig
