"""Sharding on an 8-device CPU mesh (data=4, model=2): heads split across 'model', same numbers."""

import glob
import json
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_script
from jax.sharding import PartitionSpec as P
from model_fixtures import KEY, tiny

from jaxformer import decode
from jaxformer.models import DecoderLM, EncoderDecoder
from jaxformer.sharding import (
  FSDP_RULES,
  LOGICAL_AXIS_RULES,
  batch_sharding,
  make_mesh,
  param_shardings,
  partitioning_report,
  placement,
  validate_batch_size,
  validate_mesh_for_model,
)

CFG = tiny()


def tokens(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).integers(1, 32, shape), jnp.int32)


def random_params(abstract_params, seed=0):
  rng = np.random.default_rng(seed)
  fill = lambda path, leaf: jnp.asarray(
    rng.normal(0.0, 0.1, leaf.shape) + (path[-1].key == 'scale'), leaf.dtype
  )
  return jax.tree_util.tree_map_with_path(fill, nn.unbox(abstract_params))


def sharded_vs_single(model, args, rules):
  """Run `model` on one device and on the (4, 2) mesh; return both outputs, the sharded params."""
  mesh = make_mesh((4, 2))
  abstract = jax.eval_shape(model.init, KEY, *args)['params']
  params = random_params(abstract)
  single = jax.jit(model.apply)({'params': params}, *args)
  sharded_params = jax.device_put(params, param_shardings(abstract, mesh, rules))
  sharded_args = [jax.device_put(a, batch_sharding(mesh)) for a in args]
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    out = jax.jit(model.apply)({'params': sharded_params}, *sharded_args)
  return single, out, sharded_params


def test_each_device_holds_half_the_heads_and_forward_matches_single_device():
  x = tokens((8, 8))
  single, out, params = sharded_vs_single(DecoderLM(CFG), (x,), LOGICAL_AXIS_RULES)
  np.testing.assert_allclose(np.asarray(out), np.asarray(single), atol=1e-5, rtol=1e-5)
  attention = params['backbone']['layers']['layer']['self_attention']
  for name in ('query', 'key', 'value'):
    kernel = attention[name]['kernel']  # [layers, embed, heads, head_dim]
    assert kernel.shape == (2, 16, 4, 4)
    assert len(kernel.addressable_shards) == 8
    assert {s.data.shape for s in kernel.addressable_shards} == {
      (2, 16, 2, 4)
    }  # num_heads / 2 each
  assert attention['out']['kernel'].addressable_shards[0].data.shape == (2, 2, 4, 16)
  mlp = params['backbone']['layers']['layer']['mlp']['wi']['kernel']
  assert mlp.addressable_shards[0].data.shape == (2, 16, 32)  # 'mlp' -> model
  # The activation constraints are live under jax.set_mesh: logits come out [data, -, model].
  assert out.sharding.spec == P('data', None, 'model')


def test_encoder_decoder_sharded_forward_matches():
  src, tgt = tokens((4, 6)).at[0, 4:].set(0), tokens((4, 5), seed=2)
  single, out, _ = sharded_vs_single(
    EncoderDecoder(CFG.replace(position='rope')), (src, tgt), LOGICAL_AXIS_RULES
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(single), atol=1e-5, rtol=1e-5)


def test_fsdp_rules_shard_weights_over_data_too():
  x = tokens((4, 8))
  single, out, params = sharded_vs_single(
    DecoderLM(CFG.replace(scan_layers=False)), (x,), FSDP_RULES
  )
  np.testing.assert_allclose(np.asarray(out), np.asarray(single), atol=1e-5, rtol=1e-5)
  assert params['backbone']['token_embed']['embedding'].addressable_shards[0].data.shape == (
    16,
    4,
  )  # [vocab/2, embed/4]
  q = params['backbone']['layers']['layer_0']['self_attention']['query']['kernel']
  assert q.addressable_shards[0].data.shape == (4, 2, 4)  # [embed/4, heads/2, K]


def test_partitioning_report():
  mesh = make_mesh((4, 2))
  abstract = jax.eval_shape(DecoderLM(CFG).init, KEY, tokens((2, 8)))['params']
  report = partitioning_report(abstract, mesh)
  q = report['backbone/layers/layer/self_attention/query/kernel']
  assert q['logical_axes'] == ('layers', 'embed', 'heads', 'kv')
  assert q['partition_spec'] == P(None, None, 'model', None)
  assert q['global_shape'] == (2, 16, 4, 4) and q['shard_shape'] == (2, 16, 2, 4)
  emb = partitioning_report(abstract, mesh, FSDP_RULES)['backbone/token_embed/embedding']
  assert emb['partition_spec'] == P('model', 'data') and emb['shard_shape'] == (16, 4)


def test_make_mesh_and_validation_errors():
  assert dict(make_mesh((-1, 2)).shape) == {'data': 4, 'model': 2}
  assert dict(make_mesh().shape) == {'data': 8, 'model': 1}
  assert make_mesh((2, 2)).size == 4
  with pytest.raises(ValueError, match='needs 16 devices but only 8'):
    make_mesh((8, 2))
  with pytest.raises(ValueError, match='not divisible by 3'):
    make_mesh((-1, 3))
  mesh = make_mesh((4, 2))
  validate_mesh_for_model(CFG, mesh)  # fine
  for field, cfg in (
    ('num_heads', CFG.replace(num_heads=1)),
    ('d_ff', CFG.replace(d_ff=33)),
    ('vocab_size', CFG.replace(vocab_size=33)),
  ):
    with pytest.raises(
      ValueError, match=rf"model\.{field}=\d+ .*is not divisible by the mesh 'model' axis \(2\)"
    ):
      validate_mesh_for_model(cfg, mesh)
  # Padded to a multiple of the axis, any vocabulary splits; the error names a multiple that works.
  validate_mesh_for_model(CFG.replace(vocab_size=33, vocab_multiple=128), mesh)
  with pytest.raises(
    ValueError, match=r'set model\.vocab_multiple=384 \(or another multiple of 3\)'
  ):
    validate_mesh_for_model(
      CFG.replace(vocab_size=34, d_model=24, num_heads=3, d_ff=48), make_mesh((2, 3))
    )
  with pytest.raises(
    ValueError, match=r"model\.d_model=18 is not divisible by the mesh 'data' axis \(4\)"
  ):
    validate_mesh_for_model(
      CFG.replace(d_model=18, num_heads=2), mesh, FSDP_RULES
    )  # FSDP splits 'embed'
  validate_batch_size(8, mesh)
  with pytest.raises(
    ValueError, match=r"batch_size=6 is not divisible by the mesh 'data' axis \(4\)"
  ):
    validate_batch_size(6, mesh)


def test_kv_caches_are_laid_out_by_their_axis_names():
  """Under placement(mesh (2, 4)) a cache [layers, batch, length, heads, kv] splits its batch
  over 'data' and its heads over 'model', from the names the model gives its axes."""
  with placement(make_mesh((2, 4))):  # decoding builds its cache inside jit, like this
    cache = jax.jit(lambda: decode.lm_cache(DecoderLM(tiny()), batch=4, length=16))()
  cached_key = cache['backbone']['layers']['layer']['self_attention']['cached_key']
  assert cached_key.sharding.spec == P(None, 'data', None, 'model')
  assert {s.data.shape for s in cached_key.addressable_shards} == {(2, 2, 16, 1, 4)}


@pytest.mark.slow  # four decoding loops to compile: ~20 s on one core
def test_decoding_with_params_sharded_on_2x4_matches_one_device():
  """Sampling gives the tokens of one device, and beam search, which reorders the sharded cache
  along the batch axis its names give, the same hypotheses and scores."""
  mesh = make_mesh((2, 4))
  cfg = tiny(dropout_rate=0.0)

  def sharded(model, *args, seed):
    abstract = jax.eval_shape(model.init, KEY, *args)['params']
    params = random_params(abstract, seed=seed)
    return params, jax.device_put(params, param_shardings(abstract, mesh, LOGICAL_AXIS_RULES))

  lm, prompt = DecoderLM(cfg), tokens((4, 3))
  single, split = sharded(lm, prompt, seed=3)
  sample = lambda p: decode.generate(lm, p, prompt, max_new_tokens=8, rng=KEY, temperature=1.0)
  want = sample(single)
  with placement(mesh):
    np.testing.assert_array_equal(sample(split), want)

  seq2seq, src = EncoderDecoder(cfg), tokens((2, 6))
  single, split = sharded(seq2seq, src, src, seed=4)
  search = lambda p: decode.beam_search(seq2seq, p, src, beam_size=2, max_len=6, bos_id=1, eos_id=2)
  want = search(single)
  with placement(mesh):
    got = search(split)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5)


def _python_sources(root: str) -> dict[str, list[str]]:
  """'relative/path' -> its lines, for the package, bench/, scripts/, examples/, configs/,
  train.py, and the code cells of notebooks/*.ipynb (named 'notebook.ipynb[cell N]')."""
  paths = ['train.py']
  for pattern in ('jaxformer/**/*.py', 'bench/**/*.py', 'scripts/**/*.py', 'examples/**/*.py'):
    paths += glob.glob(pattern, root_dir=root, recursive=True)
  paths += glob.glob('configs/*.py', root_dir=root)
  sources = {}
  for path in paths:
    with open(os.path.join(root, path)) as f:
      sources[path] = f.read().splitlines()
  for path in glob.glob('notebooks/*.ipynb', root_dir=root):
    with open(os.path.join(root, path)) as f:
      cells = json.load(f)['cells']
    for number, cell in enumerate(cells):
      if cell['cell_type'] == 'code':
        source = cell['source']
        text = ''.join(source) if isinstance(source, list) else source
        sources[f'{path}[cell {number}]'] = text.splitlines()
  return sources


def test_only_sharding_py_builds_meshes_and_shardings():
  """Placement is decided in one module: no other code constructs a mesh or a sharding (the
  checkpoint restore default and pmap's replicas included), neither in the package, nor in
  bench/, scripts/, examples/, train.py or the notebooks' code cells."""
  builds = re.compile(
    r'\b(Mesh|NamedSharding|SingleDeviceSharding|PositionalSharding)\(|jax\.make_mesh\('
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sources = _python_sources(root)
  assert len(sources) > 50 and 'train.py' in sources
  assert any(name.startswith('notebooks/colab_tpu.ipynb[cell ') for name in sources)
  assert any(name.startswith('scripts/') for name in sources)
  offenders = [
    f'{name}:{number}: {line.strip()}'
    for name, lines in sources.items()
    if name != os.path.join('jaxformer', 'sharding.py')
    for number, line in enumerate(lines, 1)
    if builds.search(line)
  ]
  assert offenders == []


def test_the_documented_v5e_8_placement_of_a_1b_model():
  """bench/v5e_placement.py (quoted in docs/parallelism.md) from abstract shapes only."""
  result = load_script('bench/v5e_placement.py').placement()
  assert result['num_params'] == 1_011_572_736
  mib = {name: round(size, 1) for name, _, _, _, size in result['rows']}
  assert mib == {
    'parameters (f32)': 971.4,
    'AdamW mu + nu (f32)': 1942.7,
    'token table (tied head)': 98.2,
    'residual stream x': 32.0,
    'q, k or v (each)': 8.0,
    'attention scores': 128.0,
    'MLP hidden': 32.0,
    'logits (once)': 393.0,
  }
  shards = {name: shard for name, _, shard, _, _ in result['rows']}
  assert shards['q, k or v (each)'] == (8, 1024, 4, 128)  # batch / 2, heads / 4
  assert shards['token table (tied head)'] == (12576, 2048)  # 50304 padded rows / 4
