"""The genre parts of docs/results.md: the learning curve, the seed table, fine-tuning settings
over seeds and fewer-parameter fine-tuning, rendered from results.json's 'genre', 'genre_seeds',
'genre_settings' and 'peft'."""

from __future__ import annotations

from bench.quality_format import num, provenance, when
from jaxformer.experiments.seeds import mean_std


def genre_section(r: dict) -> list[str]:
  """The genre learning curve: fine-tuned, scratch and TF-IDF per size, and the targets."""
  g = r['genre']
  default_ft = g.get('finetune_from_default_lm')
  lines = [
    '## Genre classification (comedy / history / tragedy)',
    '',
    *provenance(r, 'genre'),
    'Balanced accuracy on the test split: 200 passages per class from plays that no training or '
    'validation passage comes from. Fine-tuned = `configs/genre_finetune.py` started from the '
    f'long LM run (`--config.init_from={g.get("init_from")}`: the default LM config at '
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
      f'| {n} | {num(ft["balanced_accuracy"])} | '
      f'{num(row.get("scratch", {}).get("balanced_accuracy"))} | {num(g["tfidf"].get(n))} | '
      f'{ft["best_step"]} / {ft["last_step"]} |'
    )
  if default_ft:
    lines += [
      '',
      'Fine-tuned from the default LM (of the commit above) instead '
      f'(`--config.init_from={default_ft["init_from"]}`, same settings, 100 per class): '
      f'{num(default_ft["balanced_accuracy"])} balanced accuracy (best step '
      f'{default_ft["best_step"]}, stopped at {default_ft["last_step"]}). One seed each, but the '
      'longer pretraining moved this number more than any fine-tuning setting did.',
    ]
  if r.get('genre_history'):
    lines += [
      '',
      'Fine-tuning settings tried at 100 per class, from the default LM, 2026-11-29, before the '
      'issue 16 fixes (chosen by validation accuracy, which comes from the training plays; the '
      'test column is shown for the record, it did not choose):',
      '',
      '| fine-tuning settings | best validation accuracy | test balanced accuracy |',
      '|---|---|---|',
    ]
    lines += [
      f'| {h["config"]} | {num(h["val_accuracy"])} | {num(h["test_balanced_accuracy"])} |'
      for h in r['genre_history']
    ]
  hundred = g['learning_curve'].get('100')
  if hundred and 'scratch' in hundred:
    ft, sc = hundred['finetune']['balanced_accuracy'], hundred['scratch']['balanced_accuracy']
    tfidf = g['tfidf'].get('100') or 1
    default_value = default_ft['balanced_accuracy'] if default_ft else None
    for label, value in (('long LM', ft), ('default LM', default_value)):
      if value is None:
        continue
      met = [
        ('>= 0.65', value >= 0.65),
        ('>= scratch + 0.10', value >= sc + 0.10),
        ('> TF-IDF', value > tfidf),
      ]
      lines += [
        '',
        f'Targets at 100 per class, fine-tuned from the {label} ({num(value)}): '
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
        f"{num(s['balanced_accuracy'])} balanced accuracy on the test split; the last step's "
        'weights '
        f'score {num(s["last_step_balanced_accuracy"])}: the best checkpoint is '
        f'{"better" if better else "not better"}.',
        '',
        '![scratch genre loss curves](results/genre_scratch_loss_curve.png)',
        '',
      ]
  missing = [n for n in order if n not in g['learning_curve']]
  if missing:
    lines += [
      f'Not measured yet: {", ".join(missing)} per class (`python -m bench.quality --only genre '
      f'--genre_sizes ...`); a dash in the table is a run that was not made.',
      '',
    ]
  return lines


def seeds_section(r: dict) -> list[str]:
  g = r['genre_seeds']
  n, seeds = g['examples_per_class'], list(g['finetune']['per_seed'])
  lines = [
    f'## Genre at {n} per class over {len(seeds)} seeds (fine-tuned from the default LM)',
    '',
    *provenance(r, 'genre_seeds'),
    'Test balanced accuracy, fine-tuned from the default LM '
    f'(`--config.init_from={g["init_from"]}`, `configs/genre_finetune.py`) and trained from '
    "scratch (`configs/genre_scratch.py`), once per `--config.seed` (the head's initialization, "
    'dropout and the order of the examples; the labelled passages and the pretrained weights are '
    'the same in every run). Spread = sample standard deviation over the seeds.',
    '',
    '| run | ' + ' | '.join(f'seed {seed}' for seed in seeds) + ' | mean ± spread | range |',
    '|---|' + '---|' * (len(seeds) + 2),
  ]
  for kind, label in (('finetune', 'pretrained + fine-tuned'), ('scratch', 'from scratch')):
    v = g[kind]
    runs = len(v['per_seed'])
    spread = f'{num(v["mean"])} ± {num(v["std"])}' if runs > 1 else f'{num(v["mean"])} (1 seed)'
    lines.append(
      f'| {label} | '
      + ' | '.join(num(v['per_seed'].get(seed, {}).get('balanced_accuracy')) for seed in seeds)
      + f' | {spread} | {num(v["min"])}–{num(v["max"])} |'
    )
  ft, sc = g['finetune'], g['scratch']
  apart = ft['min'] > sc['max']
  if len(sc['per_seed']) < len(ft['per_seed']):
    lines += [
      '',
      f'Scratch ran {len(sc["per_seed"])} of the {len(seeds)} seeds (a dash: not run); its '
      'spread is not measured, and the comparison below is with the scratch runs that exist.',
    ]
  lines += [
    '',
    f'Fine-tuning minus scratch: {ft["mean"] - sc["mean"]:+.3f} on the mean; the ranges '
    + (
      'do not overlap (every fine-tuned seed beats every scratch seed).'
      if apart
      else 'overlap: not distinguishable at this number of seeds.'
    ),
    f'Target >= 0.65 from the default LM, on the mean: {"met" if ft["mean"] >= 0.65 else "missed"} '
    f'({num(ft["mean"])}).',
    '',
  ]
  # The same table on the LMs that were the default before, newest first.
  for i, old in enumerate(g.get('earlier_defaults', [])):
    lines += [
      f'Before, on {"the previous" if i == 0 else "an earlier"} default LM ({old["lm"]}), '
      f'measured {when(old["measured"])}: fine-tuned {num(old["finetune"]["mean"])} ± '
      f'{num(old["finetune"]["std"])}, from scratch {num(old["scratch"]["mean"])} ± '
      f'{num(old["scratch"]["std"])} (its shape), over seeds '
      f'{", ".join(old["finetune"]["per_seed"])}.',
      '',
    ]
  return lines


PEFT_LABELS = {
  'full': 'full fine-tuning (`configs/genre_finetune.py`)',
  'head_only': 'head only (`freeze_backbone`)',
  'lora_r4': 'LoRA rank 4, all projections',
  'lora_r16': 'LoRA rank 16, all projections',
}


def peft_section(r: dict) -> list[str]:
  peft = r['peft']
  sizes = sorted({n for rows in peft.values() for n in rows}, key=int)
  lines = [
    '## Fine-tuning fewer parameters on few labels (genre)',
    '',
    *provenance(r, 'peft'),
    'Every method starts from the long LM and uses the genre fine-tuning config: data, '
    'dropout 0.2, label smoothing 0.1, early stopping on validation error (patience 6). Full '
    'fine-tuning keeps its own settings (learning rate 3e-4, backbone at 0.3x, 20 head-only '
    'steps); head-only and LoRA (adapters on query, key, value, out, wi, wo; alpha = 2 x rank) '
    'use learning rate 1e-3, fixed before any run. Test balanced accuracy, one seed each; step '
    "time is the median training step (batch 32 x 256 positions) of the run's log windows. "
    'Frozen parameters get no gradients (the train step stops them), so head-only training '
    'skips the backward pass through the backbone and LoRA the weight-gradient matmuls of the '
    'frozen kernels; both still run the whole forward pass.',
    '',
    '| method | ' + ' | '.join(f'{n} per class' for n in sizes) + ' | trainable parameters '
    '| step time |',
    '|---|' + '---|' * len(sizes) + '---|---|',
  ]
  for method, rows in peft.items():
    any_row = next(iter(rows.values()))
    share = any_row['trainable_params'] / any_row['total_params']
    accs = ' | '.join(num(rows.get(n, {}).get('balanced_accuracy')) for n in sizes)
    steps = sorted(row['step_s'] for row in rows.values() if row['step_s'])
    step = f'{1000 * steps[len(steps) // 2]:.0f} ms' if steps else '—'
    lines.append(
      f'| {PEFT_LABELS.get(method, method)} | {accs} | {any_row["trainable_params"]:,} '
      f'({100 * share:.3g}%) | {step} |'
    )
  lines.append('')
  for n in sizes:
    scores = {m: rows[n]['balanced_accuracy'] for m, rows in peft.items() if n in rows}
    top, low = max(scores, key=scores.get), min(scores, key=scores.get)
    lines.append(
      f'- {n} per class: highest {PEFT_LABELS.get(top, top).split(" (")[0]} '
      f'({num(scores[top])}), lowest {PEFT_LABELS.get(low, low).split(" (")[0]} '
      f'({num(scores[low])}): a spread of {scores[top] - scores[low]:.3f}.'
    )
  seeds = r.get('genre_seeds', {}).get('finetune')
  if seeds:
    lines += [
      '',
      f'For scale: full fine-tuning at {r["genre_seeds"]["examples_per_class"]} per class varies '
      f'by {num(seeds["std"])} (sample spread) and {seeds["max"] - seeds["min"]:.3f} (range) over '
      f'{len(seeds["per_seed"])} seeds alone (the section above), so a gap within that range '
      'between two single runs is not evidence of a difference.',
    ]
  return lines + ['']


def settings_section(r: dict, part: str = 'genre_settings') -> list[str]:
  g = r[part]
  rows = g['settings']
  seeds = sorted({seed for row in rows.values() for seed in row['per_seed']}, key=int)
  label = g.get('lm_label')
  lm = label or 'the default LM'
  lines = [
    f'## Fine-tuning settings at {g["examples_per_class"]} per class over {len(seeds)} seeds'
    + (f', from {label}' if label else ''),
    '',
    *provenance(r, part),
    f'Each row changes one setting of `configs/genre_finetune.py` and fine-tunes {lm} '
    f'(`--config.init_from={g["init_from"]}`) once per `--config.seed`. The mean best validation '
    'accuracy (150 passages from the training plays, what early stopping keeps) chooses; test '
    'balanced accuracy (held-out plays) is shown for the record, it does not choose. Spread = '
    'sample standard deviation over the seeds.',
    '',
    '| setting | overrides | validation accuracy, mean ± spread | test, mean ± spread | '
    + ' | '.join(f'test, seed {seed}' for seed in seeds)
    + ' |',
    '|---|---|---|---|' + '---|' * len(seeds),
  ]
  for row in rows.values():
    overrides = ' '.join(f'`{o}`' for o in row['overrides']) or '—'
    per_seed = ' | '.join(num(row['per_seed'].get(s, {}).get('balanced_accuracy')) for s in seeds)
    lines.append(
      f'| {row["label"]} | {overrides} | {mean_std(row["val"])} | {mean_std(row["test"])} '
      f'| {per_seed} |'
    )
  # A setting replaces the shipped one only if its validation mean is ahead by more than the
  # shipped setting's seed spread: a smaller lead is what another draw of seeds could reverse.
  top = max(rows.values(), key=lambda row: row['val']['mean'])
  shipped = rows.get('shipped')
  lines += ['', f'Highest mean validation accuracy: {short(top)} ({num(top["val"]["mean"])}).']
  if shipped is None:
    return lines + ['No shipped setting was run, so nothing is chosen against it.', '']
  kept, noise = shipped, shipped['val']['std']
  if top is not shipped:
    lead = top['val']['mean'] - shipped['val']['mean']
    if shipped['val']['seeds'] < 2:
      verdict = (
        'cannot be weighed: the shipped setting ran one seed, so its spread is unknown; it stays.'
      )
    elif lead > noise:
      kept, verdict = (
        top,
        f"is above the shipped setting's seed spread ({num(noise)}): it is the one to ship.",
      )
    else:
      verdict = (
        f"is within the shipped setting's seed spread ({num(noise)}): the shipped setting stays."
      )
    lines.append(f'Its lead over the shipped setting, {lead:+.3f}, ' + verdict)
  lines += [
    f'Target >= 0.65 on the test mean of the setting kept ({short(kept)}, '
    f'{num(kept["test"]["mean"])}): {"met" if kept["test"]["mean"] >= 0.65 else "missed"}.',
    '',
  ]
  return lines


def short(row: dict) -> str:
  """A setting's label without its remark in parentheses."""
  return row['label'].split(' (')[0]
