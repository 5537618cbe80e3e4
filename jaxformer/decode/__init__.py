"""Decoding with the KV cache: sampling from a language model, greedy and beam search to translate.

Every function here
- fills the model's flax 'cache' collection (keys/values of the tokens seen so far) and feeds
  one new token per step, so a step costs O(length) instead of a full O(length^2) forward pass;
- runs a fixed-shape `lax.while_loop` under `jax.jit`, which stops early once every row of
  the batch has finished. It compiles once per model, batch shape and output length:
  temperature, top-k, top-p, alpha and the token ids are traced values, not constants;
- works on a batch, and pads a row with 0 (the pad id) after its EOS;
- under `sharding.placement(mesh, rules)` lays its caches out by the axis names the model gives
  them ([batch, length, heads, kv]: batch over 'data', heads over 'model'). Every cache leaf
  with a batch axis must name it 'batch' (nn.with_logical_partitioning): beam search reorders
  the beams along it.

Language models (DecoderLM):
    generate(model, params, prompt[B, P], max_new_tokens=N, rng=key)  -> [B, P + N]
    generate(..., prompt_lengths=lengths[B])   prompts of different lengths, right-padded
The prompt (with different lengths, their common prefix) is prefilled in ONE call; the rest
of a longer prompt is fed a token per step, like the sampled tokens. Sampling is greedy
(temperature=0) or from softmax(logits / temperature), optionally restricted by top-k and
top-p (nucleus) filters.
Step i draws with `fold_in(rng, i)`, so the same key always gives the same text.

Encoder-decoder (translation):
    translate_greedy(model, params, src[B, S], max_len=T, bos_id, eos_id)  -> [B, T]
    beam_search(model, params, src[B, S], beam_size=K, alpha, ...)         -> ([B, T], scores[B])
The source is encoded once, and its cross-attention keys/values are computed once (into the
decoder cache); the outputs do not include BOS.

`generate_recompute` is the slow reference: a full forward pass over the whole sequence at
every step, no cache. Tests check the cached path against it; the benchmark times both.
"""

from jaxformer.decode.cache import (
  decoder_cache,
  decoder_cache_shapes,
  decoder_step,
  empty_decoder_cache,
  leaf_name,
  lm_cache,
  lm_step,
)
from jaxformer.decode.lm import generate, generate_recompute
from jaxformer.decode.sampling import PAD_ID, sample_logits, top_k_filter, top_p_filter
from jaxformer.decode.translation import NEG_INF, beam_search, length_penalty, translate_greedy

__all__ = [
  'NEG_INF',
  'PAD_ID',
  'beam_search',
  'decoder_cache',
  'decoder_cache_shapes',
  'decoder_step',
  'empty_decoder_cache',
  'generate',
  'generate_recompute',
  'leaf_name',
  'length_penalty',
  'lm_cache',
  'lm_step',
  'sample_logits',
  'top_k_filter',
  'top_p_filter',
  'translate_greedy',
]
