"""Vocabulary padding (ModelConfig.vocab_multiple): tables padded so any tokenizer shards on any
mesh, with the padded ids masked out of the loss, the metrics and decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxformer.configs import tiny
from model_fixtures import KEY, random_params

from jaxformer import ModelConfig
from jaxformer.checkpoint import Checkpointer, CheckpointError, load_params_for_init
from jaxformer.checkpoint.hf_gpt2 import hf_from_params, params_from_hf
from jaxformer.decode import generate
from jaxformer.model.transformer import PADDED_LOGIT, DecoderLM
from jaxformer.training.console import model_line
from jaxformer.training.loop import compiled_steps, prepare
from jaxformer.training.steps import loss_sums

BYTES = 259  # the byte tokenizer's vocabulary: 256 bytes + pad, BOS and EOS


def byte_model(**kw):
  base = dict(vocab_size=BYTES, d_model=16, num_heads=4, num_layers=1, max_len=32)
  return ModelConfig(**{**base, 'vocab_multiple': 128, **kw})


def test_tables_are_padded_and_padded_logits_masked():
  cfg = byte_model(tie_embeddings=False)
  assert cfg.padded_vocab_size == 384 and byte_model(vocab_multiple=1).padded_vocab_size == BYTES
  model = DecoderLM(cfg)
  tokens = jnp.ones((2, 8), jnp.int32)
  params = jax.jit(model.init)(KEY, tokens)['params']
  table = params['backbone']['token_embed']['embedding'].value
  head = params['lm_head']['kernel'].value
  assert table.shape == (384, 16) and head.shape == (16, 384)
  # Padded rows start at zero; the real rows are what an unpadded model draws from the same key.
  assert not np.any(table[BYTES:]) and not np.any(head[:, BYTES:])
  unpadded = jax.jit(DecoderLM(byte_model(tie_embeddings=False, vocab_multiple=1)).init)(
    KEY, tokens
  )['params']
  np.testing.assert_array_equal(
    table[:BYTES], unpadded['backbone']['token_embed']['embedding'].value
  )
  # Even weights that favour the padded ids cannot give them a usable logit.
  biased = random_params(model, tokens)
  biased['lm_head']['kernel'] = biased['lm_head']['kernel'].at[:, BYTES:].set(100.0)
  logits = model.apply({'params': biased}, tokens)
  assert logits.shape == (2, 8, 384)
  assert np.all(logits[..., BYTES:] == PADDED_LOGIT) and np.all(logits[..., :BYTES] > -1e3)


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_loss_and_accuracy_ignore_the_padded_ids(smoothing):
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, BYTES)), jnp.float32)
  padded = jnp.concatenate([logits, jnp.full((2, 5, 384 - BYTES), PADDED_LOGIT)], axis=-1)
  targets = jnp.asarray(rng.integers(0, BYTES, (2, 5)), jnp.int32)
  weights = jnp.ones((2, 5))
  want = loss_sums(logits, targets, weights, smoothing)
  got = loss_sums(padded, targets, weights, smoothing, num_classes=BYTES)
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6)


def test_sampling_never_returns_a_padded_id():
  """At a temperature that flattens every logit (PADDED_LOGIT / 1e12 is -0.001), only the real
  ids may be drawn: about a third of the draws would be padded ids otherwise."""
  model = DecoderLM(byte_model())
  prompt = jnp.ones((4, 2), jnp.int32)
  params = random_params(model, prompt)
  out = generate(model, params, prompt, max_new_tokens=24, rng=KEY, temperature=1e12)
  assert out.shape == (4, 26) and int(out.max()) < BYTES
  out = generate(model, params, prompt, max_new_tokens=24, rng=KEY, temperature=1e12, top_k=300)
  assert int(out.max()) < BYTES


def _config(mesh_shape, vocab_multiple):
  c = tiny.get_config()  # byte tokenizer: 259 ids
  c.model.d_model, c.model.num_heads, c.model.vocab_multiple = 32, 4, vocab_multiple
  c.label_smoothing = 0.1  # spreads over the 259 real ids only
  c.mesh_shape = mesh_shape
  return c


def _train(config, workdir, steps=4):
  """Losses of `steps` train steps on one batch of random bytes, and the final parameters."""
  s = prepare(config, workdir)
  train_step, _ = compiled_steps(s)
  state = s.runtime.jit_init(s.make_state, s.shardings)(jax.random.key(0), jax.random.key(1))
  rows = np.random.default_rng(0).integers(3, BYTES, (8, 33)).astype(np.int32)
  losses = []
  for _ in range(steps):
    batch = {
      'inputs': rows[:, :-1],
      'targets': rows[:, 1:],
      'weights': np.ones((8, 32), np.float32),
    }
    state, metrics = train_step(state, s.runtime.put_batch(batch))
    losses.append(float(metrics['loss_sum'] / metrics['weight_sum']))
  return losses, jax.device_get(state['params'])


@pytest.mark.slow  # two compiles of the train step, ~10 s on one core
def test_byte_model_trains_on_2x4_with_the_losses_of_one_unpadded_device(tmp_path):
  """259 ids do not split over a 'model' axis of 4; padded to 384 they do. The padded model's
  losses and real parameters equal those of an unpadded run on one device (float32, 1e-5)."""
  padded, padded_params = _train(_config((2, 4), 128), str(tmp_path / 'padded'))
  unpadded, unpadded_params = _train(_config((1, 1), 1), str(tmp_path / 'unpadded'))
  np.testing.assert_allclose(padded, unpadded, rtol=1e-5)
  assert padded[-1] < padded[0]
  table = padded_params['backbone']['token_embed']['embedding']
  assert table.shape == (384, 32) and not np.any(table[BYTES:])  # padding never trains
  want = unpadded_params['backbone']['token_embed']['embedding']
  np.testing.assert_allclose(table[:BYTES], want, rtol=1e-5, atol=1e-6)


def test_startup_reports_real_and_padding_parameters(tmp_path):
  s = prepare(_config((2, 4), 128), str(tmp_path / 'run'))
  line = model_line(s.model, s.abstract_state['params'], s.model_cfg)
  assert line.endswith(f'+ {125 * 32:,} padding (vocabulary 259 padded to 384)')


def test_gpt2_tensors_lose_the_padding_on_export_and_regain_it_on_import():
  cfg = byte_model(tie_embeddings=False, use_bias=True)
  params = random_params(DecoderLM(cfg), jnp.ones((1, 4), jnp.int32))
  params['backbone']['token_embed']['embedding'] = (
    params['backbone']['token_embed']['embedding'].at[BYTES:].set(0.0)
  )
  params['lm_head']['kernel'] = params['lm_head']['kernel'].at[:, BYTES:].set(0.0)
  tensors = hf_from_params(params, cfg)
  assert tensors['transformer.wte.weight'].shape == (BYTES, 16)
  assert tensors['lm_head.weight'].shape == (BYTES, 16)
  canonical = {k.removeprefix('transformer.'): v for k, v in tensors.items()}
  back = params_from_hf(canonical, cfg, 'test')
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params))


def test_init_from_pads_or_unpads_the_pretrained_tables(tmp_path):
  rng = np.random.default_rng(0)
  real = rng.normal(size=(BYTES, 8)).astype(np.float32)
  padded = np.concatenate([real, np.zeros((384 - BYTES, 8), np.float32)])

  def tree(table):
    return {'backbone': {'token_embed': {'embedding': jnp.asarray(table)}}}

  for name, source, target in (('to_padded', real, padded), ('to_unpadded', padded, real)):
    with Checkpointer(tmp_path / name / 'checkpoints') as ckpt:
      ckpt.save(1, {'params': tree(source), 'step': jnp.asarray(1)}, val_loss=1.0)
    fresh = jax.tree.map(jnp.zeros_like, tree(target))
    got = load_params_for_init(tmp_path / name, fresh)
    np.testing.assert_array_equal(got['backbone']['token_embed']['embedding'], target)
  # Rows past the smaller vocabulary that are not zero are real tokens: refused.
  with Checkpointer(tmp_path / 'trained' / 'checkpoints') as ckpt:
    ckpt.save(1, {'params': tree(padded + 1.0), 'step': jnp.asarray(1)}, val_loss=1.0)
  with pytest.raises(CheckpointError, match='token_embed/embedding: cannot shrink'):
    load_params_for_init(tmp_path / 'trained', tree(real))


def test_experiments_count_the_padded_table_as_embeddings(tmp_path):
  """Non-embedding parameters of a byte model are the same padded or not."""
  import json

  from jaxformer.experiments.common import Run, describe_lm_run

  counts = []
  for multiple in (1, 128):
    workdir = tmp_path / str(multiple)
    workdir.mkdir()
    model = byte_model(vocab_multiple=multiple).to_dict()
    (workdir / 'config.json').write_text(json.dumps({'model': model, 'batch_size': 8}))
    metrics = [{'step': 1, 'split': 'val', 'bits_per_byte': 2.0}]
    summary = {'best_val_loss': 1.0, 'last_step': 1, 'tokens_per_s': 1.0, 'wall_s': 1.0}
    counts.append(
      describe_lm_run(Run(str(workdir), summary, metrics, True))['non_embedding_params']
    )
  assert counts[0] == counts[1] > 0
