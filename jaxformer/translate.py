"""Translate with a trained encoder-decoder: beam search by default, or greedy.

    python -m jaxformer.translate --workdir runs/numbers_translate \\
        "twenty-three" "one hundred and five"
    echo "twenty-three" | python -m jaxformer.translate --workdir runs/numbers_translate --greedy

Prints one translation per input, in order (inputs come from the arguments, else one per line
on stdin). --workdir takes a training run or an export (python -m jaxformer.export).
"""

from __future__ import annotations

import sys

from jaxformer import cli, inference


def build_parser() -> cli.Parser:
  p = cli.Parser(prog='python -m jaxformer.translate', description=__doc__.splitlines()[0])
  p.add_argument('texts', nargs='*', help='source texts (default: read lines from stdin)')
  p.add_argument('--workdir', required=True, help='training run workdir or export directory')
  p.add_argument('--beam_size', type=int, default=4, help='beam width (1 = greedy)')
  p.add_argument('--alpha', type=float, default=0.6, help='GNMT length penalty exponent')
  p.add_argument('--greedy', action='store_true', help='greedy decoding instead of beam search')
  p.add_argument(
    '--max_len', type=int, default=None, help='longest output in tokens (default: model max_len)'
  )
  p.add_argument('--batch_size', type=int, default=64, help='sentences decoded together')
  return p


def translate(
  loaded, texts, *, greedy=False, beam_size=4, alpha=0.6, max_len=None, batch_size=64
) -> list[str]:
  """Translations of `texts` (a list of strings), decoded batch by batch with fixed shapes."""
  import jax
  import jax.numpy as jnp

  from jaxformer import decode
  from jaxformer.data.tokenizers import decode_rows

  inference.require_task(loaded, 'translate', 'translate')
  tok, length = loaded.tokenizer, loaded.model_config.max_len
  max_len = max_len or length
  outputs = []
  for start in range(0, len(texts), batch_size):
    chunk = list(texts[start : start + batch_size])
    # Pad the batch to a fixed row count so every batch reuses one compiled program.
    rows = min(batch_size, len(texts))
    src = inference.encode_sources(tok, chunk + [''] * (rows - len(chunk)), length)
    if greedy:
      out = decode.translate_greedy(
        loaded.model,
        loaded.params,
        jnp.asarray(src),
        max_len=max_len,
        bos_id=tok.bos_id,
        eos_id=tok.eos_id,
        num_tokens=tok.vocab_size,
      )
    else:
      out, _ = decode.beam_search(
        loaded.model,
        loaded.params,
        jnp.asarray(src),
        beam_size=beam_size,
        alpha=alpha,
        max_len=max_len,
        bos_id=tok.bos_id,
        eos_id=tok.eos_id,
        num_tokens=tok.vocab_size,
      )
    outputs += decode_rows(tok, jax.device_get(out)[: len(chunk)])
  return outputs


def _main(args) -> int:
  texts = args.texts or [line.rstrip('\n') for line in sys.stdin if line.strip()]
  if not texts:
    raise cli.UsageError('nothing to translate: pass texts as arguments or on stdin')
  if args.batch_size < 1:
    raise cli.UsageError(f'--batch_size must be >= 1, got {args.batch_size}')
  loaded = inference.load(args.workdir)
  for line in translate(
    loaded,
    texts,
    greedy=args.greedy,
    beam_size=args.beam_size,
    alpha=args.alpha,
    max_len=args.max_len,
    batch_size=args.batch_size,
  ):
    print(line, flush=True)
  return 0


def main(argv=None) -> int:
  return cli.run_cli(_main, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
