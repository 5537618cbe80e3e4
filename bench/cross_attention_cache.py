"""Translation decoding with the cross-attention keys/values cached once per source, against the
old path that projects the encoder output again at every decoding step (issue 16, item 4).

    python -m bench.cross_attention_cache --workdir runs/quality/numbers_en_de --rounds 5

Both paths run in one process on the same run, on the test split's sources, through
jaxformer.translate's `translate` (the `python -m jaxformer.translate` code path), greedy and beam
search. The old path is today's decoding with the step function handed the encoder output each
time, so that every step projects it to keys and values in every cross-attention layer, as the
decoder did before the cache (it also keeps today's one projection before the loop: one more
per batch, next to one per step). Rounds alternate between the paths, so a machine that
slows down or speeds up affects both; the ratio is the median of the per-round ratios. Both paths
must give the same translations, or the script stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time

import jax

from jaxformer import inference
from jaxformer.data import build_task_data
from jaxformer.decode import cache as decode_cache
from jaxformer.decode import translation
from jaxformer.translate import translate


@contextlib.contextmanager
def per_step_projection():
  """Decoding as before the cache: every step gets the encoder output and projects it again.

  The decoding loops call `decoder_cache` once (with the encoder output) and then `decoder_step`
  with encoded=None. Inside this context the first call remembers the encoder output of the
  trace, and every step is handed it back.
  """
  traced = {}

  def remembering_cache(model, params, encoded, src, length):
    traced['encoded'] = encoded
    return decode_cache.decoder_cache(model, params, encoded, src, length)

  def projecting_step(model, params, cache, encoded, src, tokens):
    encoded = traced['encoded'] if encoded is None else encoded
    return decode_cache.decoder_step(model, params, cache, encoded, src, tokens)

  saved = translation.decoder_cache, translation.decoder_step
  translation.decoder_cache, translation.decoder_step = remembering_cache, projecting_step
  jax.clear_caches()  # the jitted loops must be traced again with these steps
  try:
    yield
  finally:
    translation.decoder_cache, translation.decoder_step = saved
    jax.clear_caches()


def test_sources(loaded, limit: int) -> list[str]:
  dataset = dict(loaded.config['dataset'], download=False)
  data = build_task_data(
    dataset,
    task='translate',
    max_len=loaded.model_config.max_len,
    batch_size=64,
    seed=0,
    tokenizer=loaded.tokenizer,
    process_index=0,
    process_count=1,
  )
  return [e['source'] for e in data.examples(data.splits['test'], limit=limit)]


def timed(loaded, texts, mode: str) -> tuple[float, list[str]]:
  start = time.perf_counter()
  out = translate(loaded, texts, greedy=mode == 'greedy', beam_size=4)
  return time.perf_counter() - start, out


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', default='runs/quality/numbers_en_de', help='a translate run')
  p.add_argument('--limit', type=int, default=1000, help='test sources to translate')
  p.add_argument('--rounds', type=int, default=5, help='timed rounds per path (alternating)')
  p.add_argument('--out', default=None, help='also write the result as JSON here')
  args = p.parse_args()
  loaded = inference.load(args.workdir)
  texts = test_sources(loaded, args.limit)
  paths = {'cached': contextlib.nullcontext, 'per_step': per_step_projection}
  result = {'workdir': args.workdir, 'sources': len(texts), 'load_start': os.getloadavg()[0]}
  for mode in ('greedy', 'beam4'):
    times = {name: [] for name in paths}
    outputs = {}
    for name, context in paths.items():  # compile both first: rounds time decoding only
      with context():
        _, outputs[name] = timed(loaded, texts, mode)
    if outputs['cached'] != outputs['per_step']:
      raise SystemExit(f'{mode}: the two paths translate differently; nothing to compare')
    for _ in range(args.rounds):
      for name, context in paths.items():
        with context():
          timed(loaded, texts[:64], mode)  # re-trace after the context's cache clearing
          times[name].append(timed(loaded, texts, mode)[0])
    ratios = [s / c for s, c in zip(times['per_step'], times['cached'], strict=True)]
    result[mode] = {
      'cached_s': statistics.median(times['cached']),
      'per_step_s': statistics.median(times['per_step']),
      'per_step_over_cached': statistics.median(ratios),
      'ratios': ratios,
    }
    print(mode, json.dumps(result[mode]), flush=True)
  result['load_end'] = os.getloadavg()[0]
  if args.out:
    with open(args.out + '.tmp', 'w') as f:
      json.dump(result, f, indent=2)
    os.replace(args.out + '.tmp', args.out)
  print(json.dumps(result, indent=2))


if __name__ == '__main__':
  main()
