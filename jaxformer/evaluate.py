"""Evaluate a trained model on a split and write <workdir>/eval_<split>.json.

    python -m jaxformer.evaluate --workdir runs/numbers_translate [--split test] [--limit 500]

What it reports (keys in snake_case):
  lm         loss (nats per token), perplexity, bits_per_byte, token_accuracy
  translate  loss, token_accuracy (teacher-forced); exact_match and bleu (sacreBLEU) of beam
             search, plus exact_match_greedy / exact_match_beam / bleu_greedy / bleu_beam
  classify   loss, accuracy, balanced_accuracy, per_class_f1, confusion_matrix, label_names;
             the matrix is also drawn to <workdir>/confusion_<split>.png

--workdir takes a training run or an export directory; the files are written there. Data is read
from --data_dir, else $JAXFORMER_DATA_DIR, never from a path recorded in the run, and is never
downloaded (a file inside a run or an export decides nothing about other directories). The split
defaults to the run's test split (or its validation split when it has none). --limit scores
only the first N examples (LM: windows of max_len tokens); bits_per_byte then divides by the
bytes of exactly the targets scored.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np

from jaxformer import cli, inference, metrics


def build_parser() -> cli.Parser:
  p = cli.Parser(prog='python -m jaxformer.evaluate', description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='training run workdir or export directory')
  p.add_argument(
    '--split', default=None, help="split to score (default: the run's test, else validation split)"
  )
  p.add_argument('--limit', type=int, default=None, help='score only the first N examples')
  p.add_argument(
    '--batch_size', type=int, default=None, help="evaluation batch size (default: the run's)"
  )
  p.add_argument('--beam_size', type=int, default=4, help='translation: beam width')
  p.add_argument(
    '--alpha', type=float, default=0.6, help='translation: GNMT length penalty exponent'
  )
  p.add_argument(
    '--data_dir', default=None, help='where the datasets live (default: $JAXFORMER_DATA_DIR)'
  )
  return p


def _batches(data, split: str, batch_size: int, limit: int | None):
  """(row offset, batch) over the first `limit` rows of split; rows past it get weight 0."""
  batches = data.eval_batches(split, batch_size)
  total = batches.num_rows if limit is None else min(limit, batches.num_rows)
  for b, batch in enumerate(batches):
    start = b * batch_size
    if start >= total:
      break
    keep = (np.arange(start, start + batch_size) < total).astype(np.float32)
    batch['weights'] = batch['weights'] * keep.reshape((-1,) + (1,) * (batch['weights'].ndim - 1))
    yield start, batch, total


def _loss_sums(loaded, data, split, batch_size, limit):
  """Teacher-forced (loss_sum, weight_sum, correct_sum) over the split, dropout off."""
  import jax
  import jax.numpy as jnp

  from jaxformer.training import steps

  eval_step = jax.jit(steps.make_eval_step(loaded.model, task=loaded.task))
  sums, rows = np.zeros(3), 0
  for _, batch, total in _batches(data, split, batch_size, limit):
    sums += np.asarray(
      eval_step(loaded.params, {k: jnp.asarray(v) for k, v in batch.items()}), np.float64
    )
    rows = total
  return sums, rows


def evaluate_lm(loaded, data, split, batch_size, limit) -> dict:
  (loss_sum, weight_sum, correct), rows = _loss_sums(loaded, data, split, batch_size, limit)
  loss = loss_sum / max(weight_sum, 1.0)
  return {
    'num_examples': rows,
    'num_tokens': int(weight_sum),
    'loss': loss,
    'perplexity': metrics.perplexity(loss),
    'bits_per_byte': metrics.bits_per_byte(loss_sum, data.scored_bytes(split, rows)),
    'token_accuracy': correct / max(weight_sum, 1.0),
  }


def evaluate_translate(loaded, data, split, batch_size, limit, *, beam_size, alpha) -> dict:
  import jax
  import jax.numpy as jnp

  from jaxformer import decode
  from jaxformer.data.tokenizers import decode_rows

  (loss_sum, weight_sum, correct), rows = _loss_sums(loaded, data, split, batch_size, limit)
  tok, max_len = loaded.tokenizer, loaded.model_config.max_len
  greedy, beam = [], []
  for start, batch, total in _batches(data, split, batch_size, limit):
    src = jnp.asarray(batch['inputs'])
    n = min(batch_size, total - start)
    g = decode.translate_greedy(
      loaded.model,
      loaded.params,
      src,
      max_len=max_len,
      bos_id=tok.bos_id,
      eos_id=tok.eos_id,
      num_tokens=tok.vocab_size,
    )
    b, _ = decode.beam_search(
      loaded.model,
      loaded.params,
      src,
      beam_size=beam_size,
      alpha=alpha,
      max_len=max_len,
      bos_id=tok.bos_id,
      eos_id=tok.eos_id,
      num_tokens=tok.vocab_size,
    )
    greedy += decode_rows(tok, jax.device_get(g)[:n])
    beam += decode_rows(tok, jax.device_get(b)[:n])
  examples = data.examples(split, limit=rows)
  references = [e['target'] for e in examples]
  result = {
    'num_examples': rows,
    'loss': loss_sum / max(weight_sum, 1.0),
    'token_accuracy': correct / max(weight_sum, 1.0),
    'beam_size': beam_size,
    'alpha': alpha,
    'exact_match_greedy': metrics.exact_match(greedy, references),
    'exact_match_beam': metrics.exact_match(beam, references),
    'bleu_greedy': metrics.bleu(greedy, references),
    'bleu_beam': metrics.bleu(beam, references),
    'examples': [
      {'source': e['source'], 'target': e['target'], 'greedy': g, 'beam': b}
      for e, g, b in zip(examples[:5], greedy, beam)
    ],
    'errors': [
      {'source': e['source'], 'target': e['target'], 'greedy': g, 'beam': b}  # first 20
      for e, g, b in zip(examples, greedy, beam)
      if b != e['target']
    ][:20],
  }
  result['exact_match'], result['bleu'] = result['exact_match_beam'], result['bleu_beam']
  return result


def evaluate_classify(loaded, data, split, batch_size, limit, out_dir) -> dict:
  import jax
  import jax.numpy as jnp

  (loss_sum, weight_sum, _), rows = _loss_sums(loaded, data, split, batch_size, limit)
  predict = jax.jit(
    lambda params, x: jnp.argmax(loaded.model.apply({'params': params}, x), axis=-1)
  )
  labels, preds = [], []
  for start, batch, total in _batches(data, split, batch_size, limit):
    n = min(batch_size, total - start)
    preds.append(np.asarray(predict(loaded.params, jnp.asarray(batch['inputs'])))[:n])
    labels.append(np.asarray(batch['targets'])[:n])
  labels, preds = np.concatenate(labels), np.concatenate(preds)
  k, names = loaded.num_classes, list(data.label_names)
  matrix = metrics.confusion_matrix(labels, preds, k)
  png = os.path.join(out_dir, f'confusion_{split}.png')
  metrics.plot_confusion(matrix, names, png, title=f'{data.source.name} {split} (rows: true class)')
  return {
    'num_examples': rows,
    'loss': loss_sum / max(weight_sum, 1.0),
    'accuracy': metrics.accuracy(labels, preds),
    'balanced_accuracy': metrics.balanced_accuracy(labels, preds, k),
    'per_class_f1': dict(zip(names, metrics.per_class_f1(labels, preds, k))),
    'confusion_matrix': matrix.tolist(),
    'label_names': names,
    'confusion_png': os.path.basename(png),
  }


def evaluate(
  loaded,
  split: str | None = None,
  *,
  limit=None,
  batch_size=None,
  beam_size=4,
  alpha=0.6,
  data_dir=None,
  out_dir=None,
) -> dict:
  """Scores `loaded` (from inference.load) on `split`; returns the dict written to
  eval_<split>.json."""
  from jaxformer.data import build_task_data, load_split_record

  if limit is not None and limit < 1:
    raise ValueError(f'--limit must be >= 1, got {limit}')
  dataset = loaded.config.get('dataset') or {}
  if not isinstance(dataset, dict) or not dataset:
    raise ValueError(f'{loaded.path} records no dataset in its config; cannot evaluate it')
  # A file inside a run or an export never chooses where data is read, prepared or downloaded:
  # only --data_dir (or $JAXFORMER_DATA_DIR) does, and evaluation never downloads.
  dataset = dict(dataset, data_dir=data_dir or '', download=False)
  if batch_size is not None and batch_size < 1:
    raise ValueError(f'--batch_size must be >= 1, got {batch_size}')
  batch_size = int(batch_size or loaded.config.get('batch_size') or 32)
  data = build_task_data(
    dataset,
    task=loaded.task,
    max_len=loaded.model_config.max_len,
    batch_size=batch_size,
    seed=int(loaded.config.get('seed', 0)),
    tokenizer=loaded.tokenizer,
    process_index=0,
    process_count=1,
    split_record=load_split_record(loaded.path),
  )
  split = split or data.splits['test'] or data.splits['eval']
  if not split:
    raise ValueError(
      f'dataset {dataset.get("name")!r} names no test or validation split; pass --split'
    )
  out_dir = out_dir or loaded.path
  if loaded.task == 'lm':
    result = evaluate_lm(loaded, data, split, batch_size, limit)
  elif loaded.task == 'translate':
    result = evaluate_translate(
      loaded, data, split, batch_size, limit, beam_size=beam_size, alpha=alpha
    )
  else:
    result = evaluate_classify(loaded, data, split, batch_size, limit, out_dir)
  return {
    'task': loaded.task,
    'split': split,
    'dataset': dataset.get('name'),
    'step': loaded.step,
  } | result


def _main(args) -> int:
  from jaxformer.training.writers import write_json_atomic

  loaded = inference.load(args.workdir)
  result = evaluate(
    loaded,
    args.split,
    limit=args.limit,
    batch_size=args.batch_size,
    beam_size=args.beam_size,
    alpha=args.alpha,
    data_dir=args.data_dir,
  )
  path = os.path.join(args.workdir, f'eval_{re.sub(r"[^A-Za-z0-9_.-]", "_", result["split"])}.json')
  write_json_atomic(path, result)
  shown = {
    k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
  }
  print(
    f'{result["task"]} {result["split"]}: '
    + ', '.join(f'{k} {v:.4f}' if isinstance(v, float) else f'{k} {v}' for k, v in shown.items()),
    flush=True,
  )
  print(f'wrote {path}', flush=True)
  return 0


def main(argv=None) -> int:
  return cli.run_cli(_main, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
