"""Sample text from a trained language model (like nanoGPT's sample.py).

    python -m jaxformer.generate --workdir runs/shakespeare_lm --prompt "ROMEO:" \
        [--max_new_tokens 200] [--temperature 0.8] [--top_k 200] [--top_p 1.0] [--seed 0] \\
        [--num_samples 1]
    python -m jaxformer.generate --workdir runs/shakespeare_lm --prompt "ROMEO:" --prompt "JULIET:"
    python -m jaxformer.generate --workdir runs/shakespeare_lm --prompt_file prompts.txt

--workdir takes a training run or an export (python -m jaxformer.export). Several prompts
(repeated --prompt, or --prompt_file with one prompt a line) are sampled together in one
batch, whatever their lengths; the texts print in prompt order, --num_samples per prompt.
Each prompt is fed after an EOS token, because the training stream joins documents with EOS:
the model then continues it as the start of a new text. Sampling stops at the next EOS.
temperature 0 is greedy; the same --seed gives the same text.
"""

from __future__ import annotations

import sys

from jaxformer import cli, inference


def build_parser() -> cli.Parser:
  p = cli.Parser(prog='python -m jaxformer.generate', description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='training run workdir or export directory')
  p.add_argument(
    '--prompt',
    action='append',
    help='text to continue; repeat for several (default: start a new text)',
  )
  p.add_argument('--prompt_file', help='a UTF-8 text file with one prompt a line')
  p.add_argument(
    '--max_new_tokens',
    type=int,
    default=None,
    help="tokens to sample (default: fill the model's max_len)",
  )
  p.add_argument('--temperature', type=float, default=0.8, help='softmax temperature; 0 = greedy')
  p.add_argument(
    '--top_k', type=int, default=200, help='sample only from the k most likely tokens; 0 = off'
  )
  p.add_argument('--top_p', type=float, default=1.0, help='nucleus sampling mass; 1 = off')
  p.add_argument(
    '--seed', type=int, default=0, help='random seed: the same seed gives the same text'
  )
  p.add_argument(
    '--num_samples', type=int, default=1, help='how many samples to draw (in one batch)'
  )
  return p


def sample(
  loaded,
  prompts,
  *,
  max_new_tokens=None,
  temperature=0.8,
  top_k=200,
  top_p=1.0,
  seed=0,
  num_samples=1,
  prompt_names=None,
) -> list[str]:
  """prompt + sampled continuation for each prompt (a string or a list), num_samples times each.

  All samples are one batch: prompts of different lengths decode together. The result lists
  prompt 0's samples first. prompt_names: how errors name each prompt (default 'prompt i').
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxformer import decode
  from jaxformer.data.tokenizers import decode_rows

  inference.require_task(loaded, 'lm', 'generate')
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  names = prompt_names or [f'prompt {i + 1}' for i in range(len(prompts))]
  if num_samples < 1:
    raise ValueError(f'--num_samples must be >= 1, got {num_samples}')
  tok, max_len = loaded.tokenizer, loaded.model_config.max_len
  ids = [[tok.eos_id] + tok.encode(prompt) for prompt in prompts]
  for name, row in zip(names, ids):
    if len(row) >= max_len:
      raise ValueError(
        f"{name} is {len(row) - 1} tokens; this model's max_len={max_len} leaves no room "
        'to generate: shorten the prompt'
      )
  longest = max(len(row) for row in ids)
  room = max_len - longest
  if max_new_tokens is None:
    max_new_tokens = room
  if max_new_tokens > room:
    raise ValueError(
      f"--max_new_tokens {max_new_tokens} does not fit: the model's max_len={max_len} leaves "
      f'room for {room} tokens after the longest prompt; ask for at most {room}'
    )
  rows = [row for row in ids for _ in range(num_samples)]
  batch = np.zeros((len(rows), longest), np.int32)
  for r, row in enumerate(rows):
    batch[r, : len(row)] = row
  lengths = np.array([len(row) for row in rows], np.int32)
  top_k = min(top_k, loaded.model_config.vocab_size)
  out = decode.generate(
    loaded.model,
    loaded.params,
    jnp.asarray(batch),
    prompt_lengths=lengths,
    max_new_tokens=max_new_tokens,
    rng=jax.random.key(seed),
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    eos_id=tok.eos_id,
    num_tokens=tok.vocab_size,
  )
  out = jax.device_get(out)
  texts = decode_rows(tok, [out[r, n : n + max_new_tokens] for r, n in enumerate(lengths)])
  return [
    prompt + text for prompt, text in zip((p for p in prompts for _ in range(num_samples)), texts)
  ]


def read_prompts(args) -> tuple[list[str], list[str]]:
  """(prompts, their names for error messages) from --prompt or --prompt_file."""
  if args.prompt is not None and args.prompt_file is not None:
    raise cli.UsageError('give prompts with --prompt or with --prompt_file, not both')
  if args.prompt_file is None:
    prompts = args.prompt or ['']
    return prompts, [f'--prompt {i + 1}' for i in range(len(prompts))]
  path = args.prompt_file
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError as e:
    raise cli.UsageError(
      f'--prompt_file {path}: not UTF-8 text ({e.reason} at byte {e.start})'
    ) from None
  if not lines:
    raise cli.UsageError(f'--prompt_file {path} is empty: write one prompt a line')
  return lines, [f'the prompt on line {i + 1} of {path}' for i in range(len(lines))]


def _main(args) -> int:
  prompts, names = read_prompts(args)
  loaded = inference.load(args.workdir)
  texts = sample(
    loaded,
    prompts,
    max_new_tokens=args.max_new_tokens,
    temperature=args.temperature,
    top_k=args.top_k,
    top_p=args.top_p,
    seed=args.seed,
    num_samples=args.num_samples,
    prompt_names=names,
  )
  print('\n---------------\n'.join(texts), flush=True)
  return 0


def main(argv=None) -> int:
  return cli.run_cli(_main, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
