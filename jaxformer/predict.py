"""Run a trained model over a file of new rows and write one JSON line of predictions per row.

    python -m jaxformer.predict --workdir runs/tickets --input new.csv --output predictions.jsonl

The input is read like training files (.csv/.tsv/.jsonl with a header or keys; .txt: one row
per non-blank line), with the run's text_key / source_key unless --key names another column.
  classify   {"line", "text", "label", "probabilities": {class name: p}, "truncated"}
  translate  {"line", "source", "translation"}: beam search (--beam_size 1 = greedy)
  lm         {"line", "prompt", "continuation"}: greedy (--temperature 0) or sampled
The input is read as it is predicted, --batch_size rows at a time (a file of any size needs the
memory of one batch), with a progress bar of rows done. The output is written to a temporary
file and renamed at the end: an interrupted run never leaves a half-written file. An existing
--output is kept unless --overwrite is given. A bad input (a missing column, an empty field, a
source too long for the model) is one line naming the file, the line and the field, exit code
2, and nothing written (predictions made before the bad line are dropped with the temporary file).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np

from jaxformer import cli, inference

_KEY = {'classify': 'text', 'translate': 'source', 'lm': 'text'}


def build_parser() -> cli.Parser:
  p = cli.Parser(prog='python -m jaxformer.predict', description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='training run workdir or export directory')
  p.add_argument('--input', required=True, help='rows to predict: .csv, .tsv, .jsonl or .txt')
  p.add_argument('--output', required=True, help='where to write the predictions (JSON lines)')
  p.add_argument('--overwrite', action='store_true', help='replace an existing --output file')
  p.add_argument('--key', default='', help="input column or key (default: the run's text/source)")
  p.add_argument('--batch_size', type=int, default=32, help='rows per model call')
  p.add_argument('--beam_size', type=int, default=4, help='translation: beam width (1 = greedy)')
  p.add_argument('--alpha', type=float, default=0.6, help='translation: length penalty exponent')
  p.add_argument('--max_new_tokens', type=int, default=64, help='lm: continuation length')
  p.add_argument('--temperature', type=float, default=0.0, help='lm: 0 = greedy, else sampling')
  p.add_argument('--seed', type=int, default=0, help='lm: sampling seed')
  return p


def read_inputs(loaded, path: str, key: str = '') -> Iterator:
  """The input rows (jaxformer.data.readers.Row) holding the field the task needs, read from
  the file as they are taken."""
  from jaxformer.data import readers

  name = _KEY[loaded.task]
  column = key or (loaded.config.get('dataset') or {}).get(f'{name}_key') or name
  return readers.iter_rows(path, {name: column}, txt_lines=True)


def label_names(loaded) -> list:
  from jaxformer.data import load_label_names

  names = load_label_names(loaded.path) or loaded.config.get('label_names')
  return list(names) if names else [str(i) for i in range(loaded.num_classes)]


def predict_rows(loaded, rows: Iterable, args, path: str) -> Iterator[list]:
  """Yields the output dicts of each batch of `rows`, in input order, taking the next batch of
  rows only when the previous one is predicted; see the module docstring."""
  if args.batch_size < 1:
    raise ValueError(f'--batch_size must be >= 1, got {args.batch_size}')
  run = {'classify': _classify, 'translate': _translate, 'lm': _continue}[loaded.task]
  rows = iter(rows)
  while batch := list(itertools.islice(rows, args.batch_size)):
    yield run(loaded, batch, args, path)


def _padded(batch: list, size: int, length: int) -> np.ndarray:
  """int32[size, length]: the batch's token rows, 0-padded (fixed shapes: one compile)."""
  out = np.zeros((size, length), np.int32)
  for i, ids in enumerate(batch):
    out[i, : len(ids)] = ids
  return out


def _classify(loaded, batch, args, path) -> list:
  import jax

  tok, length = loaded.tokenizer, loaded.model_config.max_len
  ids = [tok.encode(r.fields['text']) for r in batch]
  tokens = _padded([x[: length - 1] + [tok.eos_id] for x in ids], args.batch_size, length)
  logits = loaded.model.apply({'params': loaded.params}, tokens)  # as in training: EOS, cut
  probs = np.asarray(jax.nn.softmax(np.asarray(logits, np.float32), axis=-1))[: len(batch)]
  names = label_names(loaded)
  return [
    {
      'line': r.line,
      'text': r.fields['text'],
      'label': names[int(p.argmax())],
      'probabilities': {n: round(float(q), 6) for n, q in zip(names, p)},
      'truncated': len(x) + 1 > length,
    }
    for r, p, x in zip(batch, probs, ids)
  ]


def _translate(loaded, batch, args, path) -> list:
  import jax

  from jaxformer import decode
  from jaxformer.data.tokenizers import decode_rows

  tok, length = loaded.tokenizer, loaded.model_config.max_len
  ids = [tok.encode(r.fields['source']) + [tok.eos_id] for r in batch]
  for r, x in zip(batch, ids):
    if len(x) > length:
      raise ValueError(
        f"{path}: line {r.line}: field 'source' is {len(x)} tokens with EOS, more than the "
        f"model's max_len={length}; shorten it"
      )
  src = _padded(ids, args.batch_size, length)
  common = dict(max_len=length, bos_id=tok.bos_id, eos_id=tok.eos_id, num_tokens=tok.vocab_size)
  if args.beam_size > 1:
    out, _ = decode.beam_search(
      loaded.model, loaded.params, src, beam_size=args.beam_size, alpha=args.alpha, **common
    )
  else:
    out = decode.translate_greedy(loaded.model, loaded.params, src, **common)
  texts = decode_rows(tok, jax.device_get(out)[: len(batch)])
  return [
    {'line': r.line, 'source': r.fields['source'], 'translation': t} for r, t in zip(batch, texts)
  ]


def _continue(loaded, batch, args, path) -> list:
  """LM continuations of a batch of rows, in one generate call: prompts of different lengths are
  right-padded and passed with their lengths. The sampling key comes from --seed and the batch's
  first line, so a batch's continuations do not depend on the batches before it."""
  import jax

  from jaxformer import decode
  from jaxformer.data.tokenizers import decode_rows

  tok, length = loaded.tokenizer, loaded.model_config.max_len
  prompts = [[tok.eos_id] + tok.encode(r.fields['text']) for r in batch]  # EOS: a new document
  for r, p in zip(batch, prompts):
    if len(p) + args.max_new_tokens > length:
      raise ValueError(
        f"{path}: line {r.line}: field 'text' is {len(p) - 1} tokens; with --max_new_tokens "
        f"{args.max_new_tokens} it does not fit the model's max_len={length}: shorten it or "
        'ask for fewer tokens'
      )
  lengths = np.array([len(p) for p in prompts], np.int32)
  padded = np.zeros((len(prompts), lengths.max()), np.int32)
  for row, p in enumerate(prompts):
    padded[row, : len(p)] = p
  out = decode.generate(
    loaded.model,
    loaded.params,
    padded,
    prompt_lengths=lengths,
    max_new_tokens=args.max_new_tokens,
    rng=jax.random.fold_in(jax.random.key(args.seed), batch[0].line),
    temperature=args.temperature,
    top_k=0,
    eos_id=tok.eos_id,
  )
  out = jax.device_get(out)
  texts = decode_rows(tok, [out[row, n : n + args.max_new_tokens] for row, n in enumerate(lengths)])
  return [
    {'line': r.line, 'prompt': r.fields['text'], 'continuation': text}
    for r, text in zip(batch, texts)
  ]


def _main(args) -> int:
  from tqdm import tqdm

  if not os.path.isfile(args.input):
    raise ValueError(
      f'--input {args.input!r} is not a file; give a .csv, .tsv, .jsonl or .txt file'
    )
  directory = os.path.dirname(os.path.abspath(args.output))
  if not os.path.isdir(directory):
    raise ValueError(f'--output {args.output!r}: directory {directory} does not exist')
  _check_output_free(args)
  loaded = inference.load(args.workdir)
  rows = read_inputs(loaded, args.input, args.key)
  fd, tmp = tempfile.mkstemp(prefix='.tmp-predict-', dir=directory)
  written = 0
  try:
    with (
      os.fdopen(fd, 'w', encoding='utf-8') as f,
      tqdm(unit='row', file=sys.stderr, disable=None, desc='predict') as bar,
    ):
      for out in predict_rows(loaded, rows, args, args.input):
        f.writelines(json.dumps(o, ensure_ascii=False) + '\n' for o in out)
        written += len(out)
        bar.update(len(out))
    _check_output_free(args)  # a file made there while the model ran is the user's too
    os.replace(tmp, args.output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  print(f'wrote {written} predictions to {args.output}', file=sys.stderr, flush=True)
  return 0


def _check_output_free(args) -> None:
  if os.path.lexists(args.output) and not args.overwrite:
    raise ValueError(
      f'--output {args.output!r} already exists; choose another file, delete it, or pass '
      '--overwrite'
    )


def main(argv=None) -> int:
  return cli.run_cli(_main, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
