"""Decoding against independent references: full forward passes, brute force, hand-built logits."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxformer import decode
from jaxformer.config import ModelConfig
from jaxformer.models import DecoderLM, EncoderDecoder

PAD, BOS, EOS = 0, 1, 2


def sharpen(params, scale=4.0):
  """Random init gives near-uniform logits; scaled weights give varied, decisive outputs."""
  return jax.tree.map(lambda x: x * scale, params)


@pytest.fixture(scope='module')
def lm():
  cfg = ModelConfig(
    vocab_size=13,
    d_model=16,
    num_heads=2,
    num_layers=2,
    max_len=16,
    dropout_rate=0.0,
    scan_layers=True,
  )
  model = DecoderLM(cfg)
  params = jax.jit(lambda key: nn.unbox(model.init(key, jnp.zeros((1, 16), jnp.int32))['params']))(
    jax.random.key(0)
  )
  prompt = jax.random.randint(jax.random.key(1), (3, 4), 3, 13)
  return model, sharpen(params), prompt


@pytest.fixture(scope='module')
def seq2seq():
  # A layer loop (not scan): the cache's batch axis is then axis 0, where the LM's is axis 1.
  cfg = ModelConfig(
    vocab_size=13,
    d_model=16,
    num_heads=2,
    num_encoder_layers=1,
    num_decoder_layers=1,
    max_len=10,
    dropout_rate=0.0,
    scan_layers=False,
    position='sinusoidal',
  )
  model = EncoderDecoder(cfg)
  ones = jnp.ones((1, 10), jnp.int32)
  params = jax.jit(lambda key: nn.unbox(model.init(key, ones, ones)['params']))(jax.random.key(2))
  params = sharpen(params, 5.0)
  src = np.array(jax.random.randint(jax.random.key(3), (3, 7), 3, 13))
  src[1, 4:] = PAD  # rows of different lengths: padding must not change the result
  src[2, 2:] = PAD
  src = jnp.asarray(src)
  # Decode once with no EOS (-1 never matches), then call EOS a token that greedy emits only
  # after a few steps: outputs then stop mid-way, and only after several cached steps.
  free = np.asarray(decode.translate_greedy(model, params, src, max_len=10, bos_id=BOS, eos_id=-1))
  late = set(free[:, 4:].ravel().tolist()) - set(free[:, :4].ravel().tolist())
  assert late and len(np.unique(free)) > 2  # outputs vary, so the comparisons are not vacuous
  return model, params, src, free, min(late)


# ----- language model -----------------------------------------------------------------------


@functools.cache
def full_forward(model, params_id):
  return jax.jit(lambda params, tokens: model.apply({'params': params}, tokens))


def emittable(logits):
  """logits [..., V] without the padding id, which generation never emits."""
  return logits.at[..., decode.PAD_ID].set(-jnp.inf)


def greedy_by_full_passes(model, params, prompt, n, width=None):
  """Reference: run the whole sequence through the model for every new token, take the argmax
  (of the ids generation may emit).

  The sequence sits in a fixed [B, width] buffer (default P + n; one compilation per width);
  the zeros to the right of position t cannot change its logits in a causal model.
  Returns [B, P + n].
  """
  forward = full_forward(model, id(params))
  p = prompt.shape[1]
  tokens = np.zeros((prompt.shape[0], width or p + n), np.int32)
  tokens[:, :p] = prompt
  for t in range(p, p + n):
    tokens[:, t] = np.asarray(jnp.argmax(emittable(forward(params, tokens)[:, t - 1]), -1))
  return tokens[:, : p + n]


def test_greedy_generate_equals_argmax_of_full_forward_passes(lm):
  model, params, prompt = lm
  out = decode.generate(
    model, params, prompt, max_new_tokens=8, rng=jax.random.key(0), temperature=0.0
  )
  expected = greedy_by_full_passes(model, params, prompt, 8)
  assert out.shape == (3, 12) and out.dtype == jnp.int32
  np.testing.assert_array_equal(out, expected)
  assert len(np.unique(expected[:, 4:])) > 2  # the check is not vacuous: outputs vary


def test_prefill_in_one_call_equals_feeding_tokens_one_by_one(lm):
  model, params, prompt = lm
  step = jax.jit(lambda cache, tokens: decode.lm_step(model, params, cache, tokens))
  cache = decode.lm_cache(model, 3, 8)
  full, _ = step(cache, prompt)  # [3, 4, V]
  steps = []
  for t in range(prompt.shape[1]):
    logits, cache = step(cache, prompt[:, t : t + 1])
    steps.append(logits[:, 0])
  np.testing.assert_allclose(full, jnp.stack(steps, 1), atol=1e-4)
  np.testing.assert_allclose(full, jax.jit(model.apply)({'params': params}, prompt), atol=1e-4)


def test_cached_sampling_equals_recompute_reference(lm):
  model, params, prompt = lm
  kwargs = dict(max_new_tokens=8, rng=jax.random.key(7), temperature=1.0, top_k=5, top_p=0.9)
  np.testing.assert_array_equal(
    decode.generate(model, params, prompt, **kwargs),
    decode.generate_recompute(model, params, prompt, **kwargs),
  )


def test_same_key_same_text_different_key_different_text(lm):
  model, params, prompt = lm
  run = lambda seed: np.asarray(
    decode.generate(
      model,
      params,
      prompt,
      max_new_tokens=8,  # noqa: E731
      rng=jax.random.key(seed),
      temperature=1.0,
    )
  )
  first, again, other = run(0), run(0), run(1)
  np.testing.assert_array_equal(first, again)
  np.testing.assert_array_equal(first[:, :4], np.asarray(prompt))
  assert (first != other).any()


def test_temperature_to_zero_equals_greedy(lm):
  model, params, prompt = lm
  greedy = decode.generate(
    model, params, prompt, max_new_tokens=8, rng=jax.random.key(0), temperature=0.0
  )
  cold = decode.generate(
    model, params, prompt, max_new_tokens=8, rng=jax.random.key(5), temperature=1e-5
  )
  np.testing.assert_array_equal(greedy, cold)


def test_top_k_never_emits_a_token_outside_the_top_k(lm):
  model, params, prompt = lm
  out = decode.generate(
    model, params, prompt, max_new_tokens=8, rng=jax.random.key(3), temperature=2.0, top_k=2
  )
  logits = emittable(jax.jit(model.apply)({'params': params}, out))  # [3, 12, V]
  top2 = np.asarray(lax.top_k(logits, 2)[1])
  new = np.asarray(out)[:, 4:]
  allowed = top2[:, 3:-1]  # logits at t-1 predict token t
  assert all(new[b, t] in allowed[b, t] for b in range(new.shape[0]) for t in range(new.shape[1]))
  # Hot sampling really samples: both of the top 2 appear somewhere.
  assert (new == top2[:, 3:-1, 1]).any() and (new == top2[:, 3:-1, 0]).any()


def test_top_k_filter_keeps_exactly_k_largest():
  logits = jnp.array([[0.1, 3.0, -1.0, 2.0, 2.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
  kept = np.isfinite(np.asarray(decode.top_k_filter(logits, 2)))
  np.testing.assert_array_equal(kept, [[0, 1, 0, 0, 1], [1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(decode.top_k_filter(logits, 0), logits)
  samples = jax.jit(jax.vmap(lambda k: decode.sample_logits(logits, k, temperature=1.0, top_k=2)))(
    jax.random.split(jax.random.key(0), 500)
  )
  assert set(np.asarray(samples[:, 0]).tolist()) == {1, 4}


def test_top_p_keeps_the_smallest_set_covering_p():
  probs = np.array([0.1, 0.5, 0.15, 0.25])  # sorted: 0.5 (1), 0.25 (3), 0.15 (2), 0.1 (0)
  logits = jnp.log(jnp.asarray(np.stack([probs, probs[::-1]])))
  for p, keep in [
    (0.45, {1}),
    (0.6, {1, 3}),
    (0.8, {1, 3, 2}),
    (0.95, {0, 1, 2, 3}),
    (1.0, {0, 1, 2, 3}),
  ]:
    kept = np.isfinite(np.asarray(decode.top_p_filter(logits, p)))
    assert set(np.flatnonzero(kept[0])) == keep, p
    assert set(np.flatnonzero(kept[1])) == {3 - i for i in keep}, p  # same set, other order
  # Sampling renormalises over the kept set: 0.5 and 0.25 -> 2/3 and 1/3.
  samples = jax.jit(
    jax.vmap(lambda k: decode.sample_logits(logits[:1], k, temperature=1.0, top_p=0.6))
  )(jax.random.split(jax.random.key(1), 3000))
  counts = np.bincount(np.asarray(samples).ravel(), minlength=4)
  assert counts[0] == counts[2] == 0 and abs(counts[1] / 3000 - 2 / 3) < 0.04


def test_eos_ends_a_row_and_pads_with_zeros(lm):
  model, params, prompt = lm
  free = np.asarray(
    decode.generate(model, params, prompt, max_new_tokens=8, rng=jax.random.key(0), temperature=0.0)
  )
  eos = int(free[0, 6])  # a token row 0 emits mid-way
  out = np.asarray(
    decode.generate(
      model, params, prompt, max_new_tokens=8, rng=jax.random.key(0), temperature=0.0, eos_id=eos
    )
  )
  for row, ref in zip(out, free):
    new = list(ref[4:])
    stop = new.index(eos) + 1 if eos in new else len(new)
    assert list(row[4 : 4 + stop]) == new[:stop] and not row[4 + stop :].any()
  assert not out[0, 7:].any()


def test_generate_refuses_more_than_max_len(lm):
  model, params, prompt = lm
  with pytest.raises(ValueError, match='max_len=16'):
    decode.generate(model, params, prompt, max_new_tokens=13, rng=jax.random.key(0))
  with pytest.raises(ValueError, match='top_p'):
    decode.generate(model, params, prompt, max_new_tokens=2, rng=jax.random.key(0), top_p=0.0)


# ----- encoder-decoder ----------------------------------------------------------------------


def greedy_translation_by_full_passes(model, params, src, max_len, eos):
  """Reference: the full model (encoder + decoder) on BOS + outputs so far, argmax, repeat."""
  forward = jax.jit(lambda tgt_in: model.apply({'params': params}, src, tgt_in))
  out = np.zeros((src.shape[0], max_len), np.int32)
  done = np.zeros(src.shape[0], bool)
  for t in range(max_len):
    tgt_in = np.concatenate([np.full((src.shape[0], 1), BOS), out[:, :-1]], axis=1)  # causal: the
    new = np.where(done, 0, np.asarray(jnp.argmax(forward(tgt_in)[:, t], -1)))  # rest is unseen
    out[:, t] = new
    done |= new == eos
  return out


def test_translate_greedy_equals_argmax_of_full_forward_passes(seq2seq):
  model, params, src, free, eos = seq2seq
  np.testing.assert_array_equal(free, greedy_translation_by_full_passes(model, params, src, 10, -1))
  out = decode.translate_greedy(model, params, src, max_len=10, bos_id=BOS, eos_id=eos)
  np.testing.assert_array_equal(out, greedy_translation_by_full_passes(model, params, src, 10, eos))
  assert (np.asarray(out) == eos).any() and (
    np.asarray(out)[:, -1] == 0
  ).any()  # rows stopped at EOS


def sequence_scores(model, params, src, outputs, alpha, eos):
  """Length-normalised log-probability of each output row [B, T] under the full model."""
  outputs = np.asarray(outputs)
  tgt_in = np.concatenate([np.full((len(outputs), 1), BOS), outputs[:, :-1]], axis=1)
  logp = np.asarray(jax.nn.log_softmax(jax.jit(model.apply)({'params': params}, src, tgt_in)))
  scores = []
  for row, seq in enumerate(outputs.tolist()):
    seq = seq[: seq.index(eos) + 1] if eos in seq else seq
    total = sum(logp[row, t, tok] for t, tok in enumerate(seq))
    scores.append(total / ((5 + len(seq)) / 6) ** alpha)
  return scores


def test_beam_one_equals_greedy_and_scores_are_the_model_log_probs(seq2seq):
  model, params, src, _, eos = seq2seq
  greedy = decode.translate_greedy(model, params, src, max_len=10, bos_id=BOS, eos_id=eos)
  beam1, _ = decode.beam_search(
    model, params, src, beam_size=1, alpha=0.0, max_len=10, bos_id=BOS, eos_id=eos
  )
  np.testing.assert_array_equal(beam1, greedy)  # alpha > 0 may search past greedy's EOS
  beam1, scores1 = decode.beam_search(
    model, params, src, beam_size=1, alpha=0.6, max_len=10, bos_id=BOS, eos_id=eos
  )
  beam4, scores4 = decode.beam_search(
    model, params, src, beam_size=4, alpha=0.6, max_len=10, bos_id=BOS, eos_id=eos
  )
  np.testing.assert_allclose(
    scores1, sequence_scores(model, params, src, beam1, 0.6, eos), atol=1e-3
  )
  np.testing.assert_allclose(
    scores4, sequence_scores(model, params, src, beam4, 0.6, eos), atol=1e-3
  )
  assert (np.asarray(scores4) >= np.asarray(scores1) - 1e-4).all()  # wider search, no worse here


def test_cross_attention_keys_values_are_cached_once_and_decode_as_before(seq2seq):
  model, params, src, _, eos = seq2seq
  encoded = jax.jit(lambda s: model.apply({'params': params}, s, method='encode'))(src)
  cache = decode.decoder_cache(model, params, encoded, src, 10)
  layer = params['decoder']['layers']['layer_0']['cross_attention']
  cached = cache['decoder']['layers']['layer_0']['cross_attention']
  for name in ('key', 'value'):
    expected = jnp.einsum('bsd,dhk->bshk', encoded, layer[name]['kernel']) + layer[name]['bias']
    np.testing.assert_allclose(cached[f'cross_{name}'], expected, atol=1e-5)

  # The old path: the encoder output goes into every step, which projects it again.
  step = jax.jit(
    lambda cache, tokens: decode.decoder_step(model, params, cache, encoded, src, tokens)
  )
  cache = decode.empty_decoder_cache(model, encoded, src, 10)
  out, last = np.zeros((src.shape[0], 10), np.int32), np.full((src.shape[0], 1), BOS)
  done = np.zeros(src.shape[0], bool)
  for t in range(10):
    logits, cache = step(cache, jnp.asarray(last, jnp.int32))
    new = np.where(done, 0, np.asarray(jnp.argmax(logits[:, 0], -1)))
    out[:, t], last, done = new, new[:, None], done | (new == eos)
  cached_out = decode.translate_greedy(model, params, src, max_len=10, bos_id=BOS, eos_id=eos)
  np.testing.assert_array_equal(cached_out, out)
  assert (out == eos).any()


def _gathers(jaxpr):
  """Operand shapes of every gather in a jaxpr, sub-jaxprs (jit, while bodies) included."""
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'gather':
      shapes.append(tuple(eqn.invars[0].aval.shape))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes += _gathers(sub)
  return shapes


def _loop_projections(jaxpr, in_loop=False):
  """Output shapes of the dot_generals inside while-loop bodies (the decoding steps)."""
  shapes = []
  for eqn in jaxpr.eqns:
    if in_loop and eqn.primitive.name == 'dot_general':
      shapes.append(tuple(eqn.outvars[0].aval.shape))
    inner = in_loop or eqn.primitive.name == 'while'
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes += _loop_projections(sub, inner)
  return shapes


def test_decoding_steps_never_project_the_encoder_output_again(seq2seq):
  """The cross-attention keys/values [B, S, H, Dh] are projected once per source, before the
  loop: no decoding step of greedy or beam search holds their matmul, [B * S, D] @ [D, H * Dh].
  The old path (the encoder output passed to every step) is traced too, and does hold them."""
  model, params, src, _, eos = seq2seq

  def projections(fn, rows):
    shapes = _loop_projections(jax.make_jaxpr(fn)(params, src).jaxpr)
    assert shapes  # the steps' own matmuls are found, so an empty result means nothing
    return [s for s in shapes if s == (rows * src.shape[1], model.cfg.d_model)]

  greedy = functools.partial(decode.translate_greedy, max_len=10, bos_id=BOS, eos_id=eos)
  beam = functools.partial(
    decode.beam_search, beam_size=4, alpha=0.6, max_len=10, bos_id=BOS, eos_id=eos
  )
  assert projections(lambda p, s: greedy(model, p, s), len(src)) == []
  assert projections(lambda p, s: beam(model, p, s), 4 * len(src)) == []

  def uncached(p, s):  # every step gets the encoder output, as before the cache
    encoded = model.apply({'params': p}, s, method='encode')
    cache = decode.empty_decoder_cache(model, encoded, s, 10)

    def step(state):
      i, cache, last = state
      logits, cache = decode.decoder_step(model, p, cache, encoded, s, last)
      return i + 1, cache, jnp.argmax(logits, -1).astype(jnp.int32)

    first = jnp.full((s.shape[0], 1), BOS, jnp.int32)
    return lax.while_loop(lambda st: st[0] < 10, step, (0, cache, first))[2]

  assert len(projections(uncached, len(src))) == 2  # key and value of the one decoder layer


def test_beam_search_does_not_reorder_the_cross_attention_cache(seq2seq):
  """A sentence's beams share its source, so the per-step beam reorder gathers only the
  self-attention keys/values [B*K, max_len, H, Dh], never the cross-attention ones
  [B*K, S, H, Dh]."""
  model, params, src, _, eos = seq2seq
  jaxpr = jax.make_jaxpr(
    lambda p, s: decode.beam_search(
      model, p, s, beam_size=4, alpha=0.6, max_len=10, bos_id=BOS, eos_id=eos
    )
  )(params, src)
  rows, heads = src.shape[0] * 4, model.cfg.num_heads
  head_dim = model.cfg.d_model // heads
  shapes = _gathers(jaxpr.jaxpr)
  assert (rows, 10, heads, head_dim) in shapes  # the self-attention cache is reordered
  assert (rows, src.shape[1], heads, head_dim) not in shapes


@pytest.mark.parametrize('position', ['learned', 'sinusoidal', 'rope'])
def test_prompts_of_different_lengths_decode_as_each_prompt_alone(position):
  cfg = ModelConfig(
    vocab_size=13, d_model=16, num_heads=2, num_layers=2, max_len=20, dropout_rate=0.0
  )
  model = DecoderLM(cfg.replace(position=position))
  params = jax.jit(lambda key: nn.unbox(model.init(key, jnp.zeros((1, 20), jnp.int32))['params']))(
    jax.random.key(0)
  )
  params = sharpen(params, 3.0)
  lengths = [1, 3, 7, 12]
  rows = np.asarray(jax.random.randint(jax.random.key(1), (4, 12), 3, 13))
  prompt = np.where(np.arange(12)[None] < np.array(lengths)[:, None], rows, 0)
  out = decode.generate(
    model,
    params,
    prompt,
    prompt_lengths=lengths,
    max_new_tokens=6,
    rng=jax.random.key(0),
    temperature=0.0,
  )
  out = np.asarray(out)
  assert out.shape == (4, 18)
  for r, n in enumerate(lengths):
    # Alone: row r's prompt with nothing else in the batch, greedy by full forward passes
    # (which equal generate's cached greedy decoding, tested above).
    alone = greedy_by_full_passes(model, params, prompt[r : r + 1, :n], 6, width=18)[0]
    np.testing.assert_array_equal(out[r, : n + 6], alone)
    assert (out[r, n + 6 :] == 0).all()
  generated = np.concatenate([out[r, n : n + 6] for r, n in enumerate(lengths)])
  assert len(np.unique(generated)) > 2  # outputs vary: the comparison is not vacuous


def test_prompt_lengths_are_checked(lm):
  model, params, prompt = lm
  for bad in ([4, 4], [0, 4, 4], [4, 5, 4]):
    with pytest.raises(ValueError, match='prompt_lengths'):
      decode.generate(
        model, params, prompt, max_new_tokens=2, rng=jax.random.key(0), prompt_lengths=bad
      )


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_translation_never_emits_an_id_the_tokenizer_lacks(monkeypatch):
  """model.vocab_size 13, tokenizer 10 ids: id 11 gets the highest logit at every step, yet
  greedy and beam search with num_tokens=10 never emit it (ByteTokenizer.decode would raise)."""
  from jaxformer.decode import translation

  cfg = ModelConfig(
    vocab_size=13,
    d_model=8,  # a model of its own: no compiled decoding loop of another test is reused
    num_heads=2,
    num_encoder_layers=1,
    num_decoder_layers=1,
    max_len=6,
    dropout_rate=0.0,
    scan_layers=False,
  )
  model = EncoderDecoder(cfg)
  ones = jnp.ones((1, 6), jnp.int32)
  params = nn.unbox(model.init(jax.random.key(4), ones, ones)['params'])
  src = jax.random.randint(jax.random.key(5), (2, 6), 3, 10)
  planted, step = 11, translation.decoder_step

  def step_with_a_planted_logit(*args, **kwargs):
    logits, cache = step(*args, **kwargs)
    return logits.at[..., planted].add(1e3), cache

  monkeypatch.setattr(translation, 'decoder_step', step_with_a_planted_logit)
  common = dict(max_len=6, bos_id=BOS, eos_id=EOS)
  unmasked = decode.translate_greedy(model, params, src, **common)
  assert (np.asarray(unmasked) == planted).all()  # the plant works: without the limit it wins
  greedy = decode.translate_greedy(model, params, src, num_tokens=10, **common)
  beam, _ = decode.beam_search(model, params, src, beam_size=3, num_tokens=10, **common)
  for out in (greedy, beam):
    assert np.asarray(out).max() < 10 and np.asarray(out).min() >= 0
