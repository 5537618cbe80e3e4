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

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxformer import sharding as jf_sharding

# A finite "minus infinity" for log-probabilities: -inf - (-inf) would be NaN.
NEG_INF = -1.0e9
PAD_ID = 0  # every tokenizer's padding id: never text, so never sampled


# ----- sampling filters ---------------------------------------------------------------------


def _ranks(logits):
  """Rank of each logit in its row, 0 = largest (ties broken by position). [..., V] -> [..., V]."""
  return jnp.argsort(jnp.argsort(-logits, axis=-1, stable=True), axis=-1)


def top_k_filter(logits, k):
  """Keeps the k largest logits of each row, sets the rest to -inf. logits [..., V].

  k <= 0 keeps everything. Exactly min(k, V) tokens survive, even with ties. k may be a traced
  value, so changing it does not recompile the decoding loop.
  """
  keep = (_ranks(logits) < k) | (k <= 0)
  return jnp.where(keep, logits, -jnp.inf)


def top_p_filter(logits, p: float):
  """Nucleus filter: keeps the smallest set of most likely tokens whose probability covers p.

  logits [..., V]. A token survives when the tokens ranked above it hold less than p of the
  probability mass, so the most likely token always survives. p >= 1 keeps everything.
  """
  order = jnp.argsort(-logits, axis=-1)  # [..., V] best first
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
  mass_above = jnp.cumsum(probs, axis=-1) - probs  # mass ranked higher
  keep_sorted = mass_above < p
  keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)  # undo the sort
  return jnp.where(keep | (p >= 1.0), logits, -jnp.inf)


def sample_logits(logits, key, *, temperature, top_k=0, top_p=1.0, num_tokens=None):
  """logits [B, V] -> tokens int32[B]. temperature 0 is greedy (argmax).

  num_tokens: only ids below it are ever chosen (a vocabulary padded past the tokenizer's).
  PAD_ID is never chosen: a model may give it some probability (an imported GPT-2's added
  padding row, or a model that has not learnt yet that padding is never a next token).

  temperature, top_k and top_p may be traced scalars: one compiled loop serves all settings.
  Each filter sits behind a `lax.cond`: at small model sizes the sorts behind top-k and top-p
  cost more than the model step, so greedy decoding and unfiltered sampling skip them.
  """

  if num_tokens is not None and num_tokens < logits.shape[-1]:
    logits = jnp.where(jnp.arange(logits.shape[-1]) < num_tokens, logits, -jnp.inf)
  logits = jnp.where(jnp.arange(logits.shape[-1]) == PAD_ID, -jnp.inf, logits)

  def greedy(logits):
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def sample(logits):
    scaled = logits.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1.0)
    scaled = lax.cond(top_k > 0, lambda x: top_k_filter(x, top_k), lambda x: x, scaled)
    scaled = lax.cond(top_p < 1.0, lambda x: top_p_filter(x, top_p), lambda x: x, scaled)
    return jax.random.categorical(key, scaled, axis=-1).astype(jnp.int32)

  return lax.cond(temperature > 0, sample, greedy, logits)


# ----- the cache ----------------------------------------------------------------------------


def _abstract_cache(init_fn):
  """Shapes of the 'cache' collection that init_fn creates, without running it: nn.Partitioned
  leaves that carry each axis's logical name ('batch', 'length', 'heads', 'kv')."""
  return jax.eval_shape(init_fn)


def _empty(abstract_cache):
  """An all-zeros cache, placed by its axis names under the current mesh (sharding.py)."""
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), nn.unbox(abstract_cache))
  return jf_sharding.constrain_to_names(zeros, abstract_cache)


def lm_cache(model, batch: int, length: int):
  """An empty KV cache for `batch` rows of up to `length` tokens (index 0, all zeros)."""

  def init():
    return model.init(jax.random.key(0), jnp.zeros((batch, length), jnp.int32), decode=True)[
      'cache'
    ]

  return _empty(_abstract_cache(init))


def _decoder_cache_shapes(model, encoded, src, length: int):
  def init():
    tgt = jnp.zeros((src.shape[0], length), jnp.int32)
    return model.init(jax.random.key(0), encoded, src, tgt, decode=True, method='decode')['cache']

  return _abstract_cache(init)


def empty_decoder_cache(model, encoded, src, length: int):
  """An all-zeros decoder cache for an encoder-decoder: encoded [B, S, D], src [B, S]."""
  return _empty(_decoder_cache_shapes(model, encoded, src, length))


def decoder_cache(model, params, encoded, src, length: int):
  """The decoder cache to translate src [B, S] (encoded [B, S, D]) into up to `length` tokens.

  Self-attention keys/values start empty; the cross-attention keys/values of `encoded` are
  computed here, once, by a decode call with no target tokens. The decoding steps then pass
  encoded=None and read them from the cache.
  """
  cache = empty_decoder_cache(model, encoded, src, length)
  no_tokens = jnp.zeros((src.shape[0], 0), jnp.int32)
  return _decoder_step(model, params, cache, encoded, src, no_tokens)[1]


def _leaf_name(path) -> str:
  """The variable name at the end of a cache leaf's tree path, e.g. 'cross_key'."""
  last = path[-1]
  return str(getattr(last, 'key', getattr(last, 'name', last)))


def _lm_step(model, params, cache, tokens):
  """tokens [B, n] written at the cache index -> (logits [B, n, V], new cache)."""
  logits, mutated = model.apply(
    {'params': params, 'cache': cache}, tokens, decode=True, mutable=['cache']
  )
  return logits, mutated['cache']


def _decoder_step(model, params, cache, encoded, src, tokens):
  """tokens [B, n] -> (logits [B, n, V], new cache). encoded: the encoder output [B, S, D], or
  None to use the cross-attention keys/values already in the cache."""
  logits, mutated = model.apply(
    {'params': params, 'cache': cache},
    encoded,
    src,
    tokens,
    decode=True,
    mutable=['cache'],
    method='decode',
  )
  return logits, mutated['cache']


def _is_eos(tokens, eos_id):
  return tokens == eos_id  # eos_id -1 (no EOS) matches nothing


# ----- argument checks (outside jit: one clear line for the user) ------------------------


def _max_len(model) -> int | None:
  cfg = getattr(model, 'cfg', None)
  return getattr(cfg, 'max_len', None)


def _check_sampling(temperature, top_k, top_p):
  if not 0 <= temperature < float('inf'):  # NaN fails this too
    raise ValueError(f'temperature must be a finite number >= 0 (0 = greedy), got {temperature}')
  if top_k < 0:
    raise ValueError(f'top_k must be >= 0 (0 = off), got {top_k}')
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f'top_p must be in (0, 1] (1 = off), got {top_p}')


def _check_prompt(model, prompt, max_new_tokens: int):
  if prompt.ndim != 2 or prompt.shape[1] < 1:
    raise ValueError(f'prompt must be int32[batch, length >= 1], got shape {prompt.shape}')
  if max_new_tokens < 1:
    raise ValueError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
  limit = _max_len(model)
  total = prompt.shape[1] + max_new_tokens
  if limit is not None and total > limit:
    raise ValueError(
      f'prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} = {total} exceeds '
      f"the model's max_len={limit}; shorten the prompt or ask for fewer tokens"
    )


def _check_translate(model, src, max_len: int):
  if src.ndim != 2 or src.shape[1] < 1:
    raise ValueError(f'src must be int32[batch, length >= 1], got shape {src.shape}')
  limit = _max_len(model)
  if max_len < 1 or (limit is not None and max_len > limit):
    raise ValueError(f'max_len={max_len} must be in [1, model max_len={limit}]')


# ----- language models ----------------------------------------------------------------------


def generate(
  model,
  params,
  prompt,
  *,
  max_new_tokens: int,
  rng,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None = None,
  prompt_lengths=None,
  num_tokens: int | None = None,
):
  """Continues each prompt row with `max_new_tokens` tokens. prompt int32[B, P] -> int32[B, P + N].

  prompt_lengths: int[B], the length of each row's prompt when they differ; the rows are then
  right-padded to P (any pad value). Row r of the output is its prompt, then its N new tokens,
  then zeros. Without prompt_lengths every row's prompt is all P tokens. After a row emits
  `eos_id` (kept in the output) the rest of that row is 0. num_tokens: sample only ids below
  it, i.e. ids the tokenizer can decode when the model's vocabulary is larger.
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  _check_sampling(temperature, top_k, top_p)
  _check_prompt(model, prompt, max_new_tokens)
  lengths = _check_prompt_lengths(prompt, prompt_lengths)
  return _generate(
    model,
    params,
    prompt,
    jnp.asarray(lengths, jnp.int32),
    rng,
    prefill=int(lengths.min()),
    max_new_tokens=int(max_new_tokens),
    temperature=float(temperature),
    top_k=int(top_k),
    top_p=float(top_p),
    eos_id=-1 if eos_id is None else int(eos_id),
    num_tokens=_sampled_ids(model, num_tokens),
  )


def _sampled_ids(model, num_tokens: int | None) -> int | None:
  """How many ids may be sampled: never the model's padded vocabulary (ModelConfig.vocab_multiple).

  The model gives padded ids a very low logit, but a high temperature would lift it to a
  probability; sample_logits removes them before scaling.
  """
  cfg = getattr(model, 'cfg', None)
  if cfg is not None and cfg.padded_vocab_size > cfg.vocab_size:
    num_tokens = cfg.vocab_size if num_tokens is None else min(num_tokens, cfg.vocab_size)
  return None if num_tokens is None else int(num_tokens)


def _check_prompt_lengths(prompt, prompt_lengths) -> np.ndarray:
  batch, width = prompt.shape
  if prompt_lengths is None:
    return np.full((batch,), width, np.int32)
  lengths = np.asarray(prompt_lengths)
  if lengths.shape != (batch,) or not np.issubdtype(lengths.dtype, np.integer):
    raise ValueError(
      f'prompt_lengths must be int[{batch}] (one length per prompt row), got {lengths!r}'
    )
  if lengths.min() < 1 or lengths.max() > width:
    raise ValueError(f'prompt_lengths must be in [1, {width}] (the prompt width), got {lengths}')
  return lengths.astype(np.int32)


@functools.partial(jax.jit, static_argnames=('model', 'prefill', 'max_new_tokens', 'num_tokens'))
def _generate(
  model,
  params,
  prompt,
  lengths,
  rng,
  *,
  prefill,
  max_new_tokens,
  temperature,
  top_k,
  top_p,
  eos_id,
  num_tokens,
):
  """Prompts of per-row `lengths` [B], right-padded in prompt [B, P]; prefill = min(lengths).

  The first `prefill` columns, prompt for every row, fill the cache in one call. Then each step
  writes column c of every row: the row's prompt token while c < its length (its logits are
  not used), else a sampled token. No row ever caches padding, so positions and causal
  attention are exactly those of the row decoded alone, and nothing needs a padding mask.
  """
  batch, prompt_len = prompt.shape
  total = prompt_len + max_new_tokens
  sample = functools.partial(
    sample_logits, temperature=temperature, top_k=top_k, top_p=top_p, num_tokens=num_tokens
  )

  def write(c, logits, tokens, done):
    """Column c of every row: its prompt token, a sample from logits [B, V], or 0 when done."""
    in_prompt = c < lengths
    # Draw i is the i-th token after the shortest prompt: with equal lengths, the i-th new token.
    drawn = sample(logits, jax.random.fold_in(rng, c - prefill))
    forced = lax.dynamic_index_in_dim(prompt, jnp.minimum(c, prompt_len - 1), 1, keepdims=False)
    new = jnp.where(done, 0, jnp.where(in_prompt, forced, drawn))  # [B]
    tokens = lax.dynamic_update_slice_in_dim(tokens, new[:, None], c, axis=1)
    finished = (~in_prompt & _is_eos(new, eos_id)) | (c + 1 >= lengths + max_new_tokens)
    return tokens, done | finished

  # Prefill: the common prompt prefix in one call fills the cache and gives the next logits.
  logits, cache = _lm_step(model, params, lm_cache(model, batch, total), prompt[:, :prefill])
  tokens = jnp.zeros((batch, total), jnp.int32).at[:, :prefill].set(prompt[:, :prefill])
  tokens, done = write(prefill, logits[:, -1], tokens, jnp.zeros((batch,), bool))

  def keep_going(state):
    c, _, _, done = state
    return (c < total) & ~jnp.all(done)

  def step(state):
    c, tokens, cache, done = state
    last = lax.dynamic_slice_in_dim(tokens, c - 1, 1, axis=1)  # [B, 1]
    logits, cache = _lm_step(model, params, cache, last)  # [B, 1, V]
    tokens, done = write(c, logits[:, 0], tokens, done)
    return c + 1, tokens, cache, done

  state = (jnp.array(prefill + 1, jnp.int32), tokens, cache, done)
  return lax.while_loop(keep_going, step, state)[1]


def generate_recompute(
  model,
  params,
  prompt,
  *,
  max_new_tokens: int,
  rng,
  temperature: float = 1.0,
  top_k: int = 0,
  top_p: float = 1.0,
  eos_id: int | None = None,
):
  """`generate` without a cache: every step runs the model over the whole [B, P + N] buffer.

  Same sampling and the same keys as `generate`, so both give the same tokens; this one
  costs a full forward pass per token. It is the reference for tests and the benchmark.
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  _check_sampling(temperature, top_k, top_p)
  _check_prompt(model, prompt, max_new_tokens)
  return _generate_recompute(
    model,
    params,
    prompt,
    rng,
    max_new_tokens=int(max_new_tokens),
    temperature=float(temperature),
    top_k=int(top_k),
    top_p=float(top_p),
    eos_id=-1 if eos_id is None else int(eos_id),
    num_tokens=_sampled_ids(model, None),
  )


@functools.partial(jax.jit, static_argnames=('model', 'max_new_tokens', 'num_tokens'))
def _generate_recompute(
  model, params, prompt, rng, *, max_new_tokens, temperature, top_k, top_p, eos_id, num_tokens
):
  batch, prompt_len = prompt.shape
  sample = functools.partial(
    sample_logits, temperature=temperature, top_k=top_k, top_p=top_p, num_tokens=num_tokens
  )
  tokens = jnp.zeros((batch, prompt_len + max_new_tokens), jnp.int32).at[:, :prompt_len].set(prompt)

  def keep_going(state):
    i, _, done = state
    return (i < max_new_tokens) & ~jnp.all(done)

  def step(state):
    i, tokens, done = state
    # Causal attention: the zeros to the right of position P + i - 1 cannot change its logits.
    logits = model.apply({'params': params}, tokens)  # [B, P + N, V]
    last = lax.dynamic_index_in_dim(logits, prompt_len + i - 1, axis=1, keepdims=False)
    new = jnp.where(done, 0, sample(last, jax.random.fold_in(rng, i)))
    tokens = lax.dynamic_update_slice_in_dim(tokens, new[:, None], prompt_len + i, axis=1)
    return i + 1, tokens, done | _is_eos(new, eos_id)

  return lax.while_loop(
    keep_going, step, (jnp.array(0, jnp.int32), tokens, jnp.zeros(batch, bool))
  )[1]


# ----- encoder-decoder: greedy --------------------------------------------------------------


def translate_greedy(model, params, src, *, max_len: int, bos_id: int, eos_id: int):
  """Greedy translation. src int32[B, S] (0-padded) -> int32[B, max_len] tokens without BOS.

  Each row ends with EOS (then zeros) unless it ran out of room.
  """
  src = jnp.asarray(src, jnp.int32)
  _check_translate(model, src, max_len)
  return _translate_greedy(
    model, params, src, max_len=int(max_len), bos_id=int(bos_id), eos_id=int(eos_id)
  )


@functools.partial(jax.jit, static_argnames=('model', 'max_len'))
def _translate_greedy(model, params, src, *, max_len, bos_id, eos_id):
  batch = src.shape[0]
  encoded = model.apply({'params': params}, src, method='encode')  # [B, S, D]
  cache = decoder_cache(model, params, encoded, src, max_len)

  def keep_going(state):
    i, _, _, _, done = state
    return (i < max_len) & ~jnp.all(done)

  def step(state):
    i, out, cache, last, done = state
    logits, cache = _decoder_step(model, params, cache, None, src, last[:, None])  # [B, 1, V]
    new = jnp.where(done, 0, jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32))  # [B]
    out = lax.dynamic_update_slice_in_dim(out, new[:, None], i, axis=1)
    return i + 1, out, cache, new, done | (new == eos_id)

  state = (
    jnp.array(0, jnp.int32),
    jnp.zeros((batch, max_len), jnp.int32),
    cache,
    jnp.full((batch,), bos_id, jnp.int32),
    jnp.zeros((batch,), bool),
  )
  return lax.while_loop(keep_going, step, state)[1]


# ----- encoder-decoder: beam search ---------------------------------------------------------


def length_penalty(length, alpha: float):
  """GNMT length penalty (Wu et al. 2016): ((5 + length) / 6) ** alpha. alpha=0 turns it off."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def beam_search(
  model,
  params,
  src,
  *,
  beam_size: int = 4,
  alpha: float = 0.6,
  max_len: int,
  bos_id: int,
  eos_id: int,
):
  """Beam search translation. src int32[B, S] -> (tokens int32[B, max_len], scores float32[B]).

  A hypothesis's score is its total log-probability divided by the GNMT length penalty of
  its length (EOS included). The search follows fairseq's rules:
    - each step scores every (beam, token) extension and takes the best 2K candidates;
    - a candidate ending in EOS is finished only if it ranks in the top K (it would have held
      a beam slot); the beams are then refilled with the best K candidates not ending in EOS,
      so K hypotheses stay alive;
    - a sentence is done once it has K finished hypotheses and its best live hypothesis can
      no longer beat the worst of them, at any length up to max_len (or max_len is reached);
    - the answer is the best-scoring finished hypothesis; a sentence with none falls back to
      its best alive one (length max_len, no EOS).
  With alpha=0 and beam_size=1 this is exactly greedy decoding. With alpha > 0 even one beam
  may continue past greedy's EOS, to a longer hypothesis that the length penalty favours.
  """
  src = jnp.asarray(src, jnp.int32)
  _check_translate(model, src, max_len)
  if beam_size < 1:
    raise ValueError(f'beam_size must be >= 1, got {beam_size}')
  if alpha < 0:
    raise ValueError(f'alpha (length penalty) must be >= 0, got {alpha}')
  return _beam_search(
    model,
    params,
    src,
    beam_size=int(beam_size),
    alpha=float(alpha),
    max_len=int(max_len),
    bos_id=int(bos_id),
    eos_id=int(eos_id),
  )


@functools.partial(jax.jit, static_argnames=('model', 'beam_size', 'max_len'))
def _beam_search(model, params, src, *, beam_size, alpha, max_len, bos_id, eos_id):
  batch, k = src.shape[0], beam_size
  encoded = model.apply({'params': params}, src, method='encode')  # [B, S, D]
  # Every beam is a row of one big batch: [B, ...] -> [B * K, ...], beams of a sentence adjacent.
  encoded = jnp.repeat(encoded, k, axis=0)  # [B * K, S, D]
  src_k = jnp.repeat(src, k, axis=0)  # [B * K, S]
  cache = decoder_cache(model, params, encoded, src_k, max_len)
  # Which axis of each cache leaf is the batch: named by the cache itself (scanned layers put
  # a [num_layers] axis first); -1 for the index.
  axes = jf_sharding.logical_axis_index(
    _decoder_cache_shapes(model, encoded, src_k, max_len), 'batch'
  )
  # The beams of a sentence share its source, so its cross-attention keys/values are the same in
  # every beam: gathering them each step (2 x [B*K, S, heads, head_dim] per layer) changes
  # nothing and made beam search 1.6x slower on the number-word model.
  axes = jax.tree_util.tree_map_with_path(
    lambda path, ax: -1 if _leaf_name(path) in ('cross_key', 'cross_value') else ax, axes
  )

  def reorder(cache, beam_origin):
    """beam_origin [B, K]: which old beam each new beam continues. Gathers the cache rows."""
    rows = (jnp.arange(batch)[:, None] * k + beam_origin).reshape(-1)  # [B * K]
    return jax.tree.map(lambda x, ax: x if ax < 0 else jnp.take(x, rows, axis=ax), cache, axes)

  def keep_going(state):
    # A sentence is done once it has K finished hypotheses AND its best live one can no
    # longer beat the worst of them. Stopping at K finished alone lets low-probability early
    # EOS hypotheses fill the pool before the likely one finishes (seen with label-smoothed
    # models). A live hypothesis's log-prob (<= 0) only falls as it grows, while the length
    # penalty grows with alpha > 0, so the best score it can still reach is its log-prob now
    # over the penalty at max_len (t5x's bound); today's penalty would underestimate it.
    i, _, alive_logp, _, _, fin_scores, fin_count = state
    alive_best = alive_logp[:, 0] / length_penalty(max_len, alpha)
    done = (fin_count >= k) & (alive_best <= fin_scores[:, k - 1])
    return (i < max_len) & ~jnp.all(done)

  def step(state):
    i, alive_seqs, alive_logp, cache, fin_seqs, fin_scores, fin_count = state
    prev = lax.dynamic_index_in_dim(
      alive_seqs, jnp.maximum(i - 1, 0), axis=2, keepdims=False
    )  # [B, K]
    last = jnp.where(i == 0, bos_id, prev)
    logits, cache = _decoder_step(model, params, cache, None, src_k, last.reshape(batch * k, 1))
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32)).reshape(batch, k, vocab)
    logp = logp + alive_logp[:, :, None]  # [B, K, V]

    # The best 2K extensions over all beams: at least K of them do not end in EOS.
    cand_logp, flat = lax.top_k(logp.reshape(batch, k * vocab), 2 * k)  # [B, 2K]
    cand_beam, cand_tok = flat // vocab, (flat % vocab).astype(jnp.int32)
    cand_seqs = jnp.take_along_axis(alive_seqs, cand_beam[:, :, None], axis=1)  # [B, 2K, T]
    cand_seqs = lax.dynamic_update_slice_in_dim(cand_seqs, cand_tok[:, :, None], i, axis=2)
    ends = cand_tok == eos_id
    real = cand_logp > NEG_INF / 2  # not an extension of an empty beam slot

    # Finished: EOS candidates that rank in the top K, while the sentence still needs some.
    in_beam = jnp.arange(2 * k)[None, :] < k
    finishing = ends & in_beam & real
    new_scores = jnp.where(finishing, cand_logp / length_penalty(i + 1, alpha), -jnp.inf)
    pool_scores = jnp.concatenate([fin_scores, new_scores], axis=1)  # [B, 3K]
    pool_seqs = jnp.concatenate([fin_seqs, cand_seqs], axis=1)  # [B, 3K, T]
    fin_scores, best = lax.top_k(pool_scores, k)  # [B, K]
    fin_seqs = jnp.take_along_axis(pool_seqs, best[:, :, None], axis=1)
    fin_count = fin_count + finishing.sum(axis=1)

    # Alive: the best K candidates that do not end in EOS; the cache follows their beams.
    alive_logp, pick = lax.top_k(jnp.where(ends, NEG_INF, cand_logp), k)  # [B, K]
    alive_seqs = jnp.take_along_axis(cand_seqs, pick[:, :, None], axis=1)  # [B, K, T]
    cache = reorder(cache, jnp.take_along_axis(cand_beam, pick, axis=1))
    return i + 1, alive_seqs, alive_logp, cache, fin_seqs, fin_scores, fin_count

  # Only beam 0 is live at the start, so the K beams do not all pick the same first token.
  alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch, 1))
  state = (
    jnp.array(0, jnp.int32),
    jnp.zeros((batch, k, max_len), jnp.int32),
    alive_logp,
    cache,
    jnp.zeros((batch, k, max_len), jnp.int32),
    jnp.full((batch, k), -jnp.inf, jnp.float32),
    jnp.zeros((batch,), jnp.int32),
  )
  _, alive_seqs, alive_logp, _, fin_seqs, fin_scores, fin_count = lax.while_loop(
    keep_going, step, state
  )

  # fin_* and alive_* come out of top_k, so index 0 is each sentence's best.
  has_finished = fin_count > 0
  tokens = jnp.where(has_finished[:, None], fin_seqs[:, 0], alive_seqs[:, 0])
  scores = jnp.where(
    has_finished, fin_scores[:, 0], alive_logp[:, 0] / length_penalty(max_len, alpha)
  )
  return tokens, scores
