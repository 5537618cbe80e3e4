"""Sample text from a trained language model (like nanoGPT's sample.py).

    python -m jaxformer.generate --workdir runs/shakespeare_lm --prompt "ROMEO:" \
        [--max_new_tokens 200] [--temperature 0.8] [--top_k 200] [--top_p 1.0] [--seed 0] [--num_samples 1]

--workdir takes a training run or an export (python -m jaxformer.export). The prompt is
fed after an EOS token, because the training stream joins documents with EOS: the model
then continues it as the start of a new text. Sampling stops at the next EOS. temperature 0
is greedy; the same --seed gives the same text.
"""

from __future__ import annotations

import sys

from jaxformer import inference


def build_parser() -> inference.Parser:
  p = inference.Parser(prog='python -m jaxformer.generate', description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True, help='training run workdir or export directory')
  p.add_argument('--prompt', default='', help='text to continue (default: start a new text)')
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
  prompt: str,
  *,
  max_new_tokens=None,
  temperature=0.8,
  top_k=200,
  top_p=1.0,
  seed=0,
  num_samples=1,
) -> list[str]:
  """prompt + sampled continuation, num_samples times (one batch)."""
  import jax
  import jax.numpy as jnp

  from jaxformer import decode

  inference.require_task(loaded, 'lm', 'generate')
  tok, max_len = loaded.tokenizer, loaded.model_config.max_len
  ids = [tok.eos_id] + tok.encode(prompt)
  if len(ids) >= max_len:
    raise ValueError(
      f"the prompt is {len(ids) - 1} tokens; this model's max_len={max_len} leaves no room "
      'to generate: shorten the prompt'
    )
  room = max_len - len(ids)
  if max_new_tokens is None:
    max_new_tokens = room
  if max_new_tokens > room:
    raise ValueError(
      f"--max_new_tokens {max_new_tokens} does not fit: the model's max_len={max_len} leaves "
      f'room for {room} tokens after this prompt; ask for at most {room}'
    )
  if num_samples < 1:
    raise ValueError(f'--num_samples must be >= 1, got {num_samples}')
  top_k = min(top_k, loaded.model_config.vocab_size)
  out = decode.generate(
    loaded.model,
    loaded.params,
    jnp.asarray([ids] * num_samples, jnp.int32),
    max_new_tokens=max_new_tokens,
    rng=jax.random.key(seed),
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    eos_id=tok.eos_id,
    num_tokens=tok.vocab_size,
  )
  return [prompt + text for text in inference.decode_rows(tok, jax.device_get(out)[:, len(ids) :])]


def _main(args) -> int:
  loaded = inference.load(args.workdir)
  texts = sample(
    loaded,
    args.prompt,
    max_new_tokens=args.max_new_tokens,
    temperature=args.temperature,
    top_k=args.top_k,
    top_p=args.top_p,
    seed=args.seed,
    num_samples=args.num_samples,
  )
  print('\n---------------\n'.join(texts), flush=True)
  return 0


def main(argv=None) -> int:
  return inference.run_cli(_main, build_parser(), argv)


if __name__ == '__main__':
  sys.exit(main())
