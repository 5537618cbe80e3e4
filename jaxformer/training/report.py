"""The short report printed at the end of a run: samples, translations, or a confusion matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer import decode, metrics
from jaxformer.data.tokenizers import decode_rows
from jaxformer.training import steps


def final_report(s, params) -> dict:
  """Task-specific results on the test split (or validation when there is none)."""
  config = s.config
  split = config.dataset.test_split or config.dataset.eval_split
  tok = s.data.tokenizer
  if config.task == 'lm':
    if not config.sample_tokens:
      return {}
    prompt = config.sample_prompt or '\n'
    # Documents are joined with EOS in training, so EOS + prompt reads as "a new document starts".
    ids = ([tok.eos_id] + tok.encode(prompt))[: s.model_cfg.max_len // 2]
    new_tokens = min(
      int(config.sample_tokens), s.model_cfg.max_len - len(ids)
    )  # one context window
    out = decode.generate(
      s.model,
      params,
      jnp.asarray([ids] * 3, jnp.int32),
      max_new_tokens=new_tokens,
      rng=jax.random.key(config.seed),
      temperature=float(config.sample_temperature),
      top_k=40,
      eos_id=None,
      num_tokens=tok.vocab_size,  # model.vocab_size may be padded past the tokenizer's
    )
    return {'samples': [prompt + tok.decode(np.asarray(row[len(ids) :]).tolist()) for row in out]}
  if config.task == 'translate':
    examples = s.data.examples(split, limit=200)
    hyps = translate_texts(s, params, [e['source'] for e in examples])
    exact = float(np.mean([h == e['target'] for h, e in zip(hyps, examples)]))
    shown = [
      {'source': e['source'], 'target': e['target'], 'output': h}
      for e, h in zip(examples[:5], hyps[:5])
    ]
    return {'split': split, 'exact_match_greedy_first_200': exact, 'examples': shown}
  labels, preds = classify_split(s, params, split)
  k = s.model.num_classes
  confusion = (
    metrics.confusion_matrix(labels, preds, k) if len(labels) else np.zeros((k, k), np.int64)
  )
  return {
    'split': split,
    'accuracy': metrics.accuracy(labels, preds) if len(labels) else 0.0,
    'confusion_matrix': confusion.tolist(),
    'label_names': list(getattr(s.data, 'label_names', [])),
  }


def translate_texts(s, params, sources: list[str], batch_size: int = 64) -> list[str]:
  """Greedy translations of source strings, decoded to text.

  Over-length sources are cut (as the data pipeline does for training and evaluation) rather
  than refused like jaxformer.inference.encode_sources, so the report covers every test example.
  """
  tok, max_len = s.data.tokenizer, s.model_cfg.max_len
  outputs = []
  for i in range(0, len(sources), batch_size):
    chunk = sources[i : i + batch_size]
    src = np.zeros((batch_size, max_len), np.int32)
    for j, text in enumerate(chunk):
      ids = tok.encode(text)[: max_len - 1] + [tok.eos_id]
      src[j, : len(ids)] = ids
    out = decode.translate_greedy(
      s.model,
      params,
      jnp.asarray(src),
      max_len=max_len,
      bos_id=tok.bos_id,
      eos_id=tok.eos_id,
      num_tokens=tok.vocab_size,  # model.vocab_size may be larger than the tokenizer's
    )
    outputs += decode_rows(tok, np.asarray(out)[: len(chunk)])
  return outputs


def classify_split(s, params, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(labels, predictions) for every real example of `split`."""
  predict = jax.jit(steps.make_predict_step(s.model, task='classify'))
  labels, preds = [], []
  for batch in s.data.eval_batches(split):
    keep = np.asarray(batch['weights']) > 0
    p = np.asarray(predict(params, {k: jnp.asarray(v) for k, v in batch.items()}))
    labels.append(np.asarray(batch['targets'])[keep])
    preds.append(p[keep])
  return np.concatenate(labels), np.concatenate(preds)


def print_report(summary: dict, s) -> None:
  monitor = summary['monitor']
  print(
    f'best validation {monitor} {summary[f"best_val_{monitor}"]} at step {summary["best_step"]}'
    f'{" (stopped early)" if summary["stopped_early"] else ""}; last step {summary["last_step"]}; '
    f'{summary["wall_s"]:.0f}s',
    flush=True,
  )
  if 'test' in summary:
    print('test: ' + ', '.join(f'{k} {v:.4f}' for k, v in summary['test'].items()), flush=True)
  rep = summary.get('report', {})
  for text in rep.get('samples', []):
    print('--- sample ---\n' + text.strip('\n'))
  for ex in rep.get('examples', []):
    print(f'{ex["source"]!r} -> {ex["output"]!r} (reference {ex["target"]!r})')
  if 'exact_match_greedy_first_200' in rep:
    print(
      f'exact match (greedy, first 200 of {rep["split"]}): '
      f'{rep["exact_match_greedy_first_200"]:.3f}'
    )
  if 'confusion_matrix' in rep:
    print(
      f'{rep["split"]} accuracy {rep["accuracy"]:.3f}; confusion matrix (rows = truth, '
      f'{", ".join(rep["label_names"])}):'
    )
    for row in rep['confusion_matrix']:
      print('  ' + ' '.join(f'{v:5d}' for v in row))
  print(flush=True)
