"""init_from (backbone grafting), export_pretrained -> load_pretrained, and the export CLI."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer.checkpoint import (
  Checkpointer,
  CheckpointError,
  Pretrained,
  export_pretrained,
  load_params_for_init,
  load_pretrained,
)
from jaxformer.checkpoint.pretrained import EXPORT_FILE
from jaxformer.config import ModelConfig
from jaxformer.export import main as export_main

# Orbax's abandoned read coroutines from the corruption tests may be collected during these.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')

MODEL = ModelConfig(vocab_size=32, d_model=8, num_heads=2, num_layers=1, max_len=16)


def lm_params(seed: int, d_model: int = 8, vocab: int = 32):
  """Shaped like a DecoderLM's params: a backbone plus an untied LM head."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
  return {
    'backbone': {
      'embed': {'embedding': normal(vocab, d_model)},
      'layers': {'mlp': {'kernel': normal(d_model, 4 * d_model)}},
      'final_norm': {'scale': normal(d_model)},
    },
    'lm_head': {'kernel': normal(d_model, vocab)},
  }


def classifier_params(seed: int, d_model: int = 8, vocab: int = 32):
  fresh = lm_params(seed, d_model, vocab)
  return {'backbone': fresh['backbone'], 'head': {'kernel': jnp.full((d_model, 3), 0.5)}}


@pytest.fixture
def workdir(tmp_path):
  """A finished LM run: config.json, tokenizer/ and checkpoints with the best at step 20."""
  root = tmp_path / 'run'
  root.mkdir()
  config = {
    'task': 'lm',
    'model': MODEL.to_dict(),
    'num_classes': 0,
    'dataset': {'name': 'jaxformer_shakespeare'},
    'seed': 0,
  }
  (root / 'config.json').write_text(json.dumps(config))
  (root / 'tokenizer').mkdir()
  (root / 'tokenizer' / 'tokenizer.json').write_text('{"kind": "byte"}')
  with Checkpointer(root / 'checkpoints') as ckpt:
    for step, loss in [(10, 2.0), (20, 1.0), (30, 1.5)]:
      params = lm_params(step)
      ckpt.save(step, {'params': params, 'step': jnp.asarray(step)}, val_loss=loss)
  return root


def assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_backbone_is_grafted_and_head_stays_fresh(workdir):
  target = classifier_params(seed=99)
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharded = NamedSharding(mesh, P('data', None))  # keep the new model's shardings
  target['backbone']['embed']['embedding'] = jax.device_put(
    target['backbone']['embed']['embedding'], sharded
  )
  for path in (workdir, workdir / 'checkpoints'):
    params = load_params_for_init(path, target)
    assert_tree_equal(params['backbone'], lm_params(20)['backbone'])  # the best step's backbone
    assert_tree_equal(params['head'], target['head'])
    assert 'lm_head' not in params
    assert params['backbone']['embed']['embedding'].sharding == sharded


def test_mismatch_lists_every_path_with_both_shapes(workdir):
  target = classifier_params(seed=1, d_model=16)
  target['backbone']['extra'] = {'bias': jnp.zeros(4)}
  del target['backbone']['final_norm']
  with pytest.raises(CheckpointError) as info:
    load_params_for_init(workdir, target)
  message = str(info.value)
  assert 'backbone/embed/embedding: pretrained [32, 8] vs model [32, 16]' in message
  assert 'backbone/layers/mlp/kernel: pretrained [8, 32] vs model [16, 64]' in message
  assert 'backbone/extra/bias: missing in the pretrained parameters (model [4])' in message
  assert 'backbone/final_norm/scale: unexpected, not in the model (pretrained [8])' in message
  assert message.startswith(f'cannot initialize from {workdir}: 4 parameter(s) do not match')


def test_init_from_bad_paths(tmp_path, workdir):
  with pytest.raises(CheckpointError, match='does not exist'):
    load_params_for_init(tmp_path / 'nowhere', classifier_params(0))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(CheckpointError, match='no checkpoints in'):
    load_params_for_init(tmp_path / 'empty', classifier_params(0))
  with pytest.raises(CheckpointError, match="has no 'encoder' parameters"):
    load_params_for_init(workdir, {'encoder': {}}, subtree='encoder')


def test_export_then_load_pretrained_round_trip(tmp_path, workdir):
  out = tmp_path / 'exports' / 'lm'
  assert export_pretrained(workdir, out) == str(out)
  assert sorted(os.listdir(out)) == [EXPORT_FILE, 'params', 'tokenizer']
  assert not any(name.endswith('.export-tmp') for name in os.listdir(out.parent))
  for root, _, files in os.walk(out):  # self-contained and pickle-free
    assert not any(f.endswith(('.pkl', '.pickle', '.npy')) for f in files), root

  loaded = load_pretrained(out)
  assert isinstance(loaded, Pretrained)
  assert loaded.model_config == MODEL and loaded.task == 'lm' and loaded.num_classes is None
  assert loaded.step == 20 and loaded.val_loss == 1.0
  assert_tree_equal(loaded.params, lm_params(20))
  assert open(os.path.join(loaded.tokenizer_dir, 'tokenizer.json')).read() == '{"kind": "byte"}'
  assert loaded.config['dataset']['name'] == 'jaxformer_shakespeare'

  # A run workdir loads the same way; an export also works as init_from.
  from_workdir = load_pretrained(workdir)
  assert from_workdir.step == 20 and from_workdir.model_config == MODEL
  assert_tree_equal(from_workdir.params, loaded.params)
  grafted = load_params_for_init(out, classifier_params(5))
  assert_tree_equal(grafted['backbone'], lm_params(20)['backbone'])

  with pytest.raises(CheckpointError, match='already exists'):
    export_pretrained(workdir, out)


def test_corrupt_export_is_refused(tmp_path, workdir):
  out = tmp_path / 'lm'
  export_pretrained(workdir, out)
  manifest = json.loads((out / EXPORT_FILE).read_text())
  manifest['arrays']['params/lm_head/kernel']['sha256'] = '0' * 64
  (out / EXPORT_FILE).write_text(json.dumps(manifest))
  with pytest.raises(CheckpointError, match='checksum mismatch in params/lm_head/kernel'):
    load_pretrained(out)
  with pytest.raises(CheckpointError, match='neither an exported model'):
    load_pretrained(tmp_path)


def test_export_of_an_unknown_task_is_refused_naming_the_tasks(tmp_path, workdir):
  out = tmp_path / 'lm'
  export_pretrained(workdir, out)
  manifest = json.loads((out / EXPORT_FILE).read_text())
  manifest['task'] = 'summarize'
  (out / EXPORT_FILE).write_text(json.dumps(manifest))
  with pytest.raises(CheckpointError, match="unknown task 'summarize'; expected one of lm, transl"):
    load_pretrained(out)


def test_export_cli(tmp_path, workdir, capsys):
  out = tmp_path / 'cli_export'
  assert export_main(['--workdir', str(workdir), '--out', str(out)]) == 0
  assert 'exported step 20 (validation loss 1.0)' in capsys.readouterr().out
  config = json.loads((workdir / 'config.json').read_text())
  (workdir / 'config.json').write_text(
    json.dumps({**config, 'early_stopping': {'monitor': 'error'}})
  )
  assert export_main(['--workdir', str(workdir), '--out', str(tmp_path / 'error_export')]) == 0
  assert 'exported step 20 (validation error 1.0)' in capsys.readouterr().out
  assert export_main(['--workdir', str(workdir), '--out', str(out)]) == 2
  err = capsys.readouterr().err
  assert err.startswith('error: ') and 'already exists' in err and err.count('\n') == 1
  assert export_main(['--workdir', str(tmp_path / 'missing'), '--out', str(tmp_path / 'x')]) == 2
  assert 'no config.json' in capsys.readouterr().err


def test_layer_stack_is_converted_between_scan_and_loop_layouts(tmp_path):
  """A run trained with scan_layers=True initializes a model with scan_layers=False, and back."""
  stacked = jnp.arange(2 * 8 * 4, dtype=jnp.float32).reshape(2, 8, 4)  # [layers, d, d_ff]
  scanned = {'backbone': {'layers': {'layer': {'mlp': {'kernel': stacked}}}}}
  looped = {
    'backbone': {'layers': {f'layer_{i}': {'mlp': {'kernel': stacked[i]}} for i in range(2)}}
  }
  for source, target in ((scanned, looped), (looped, scanned)):
    root = tmp_path / f'run_{"scan" if source is scanned else "loop"}'
    with Checkpointer(root / 'checkpoints') as ckpt:
      ckpt.save(1, {'params': source, 'step': jnp.asarray(1)}, val_loss=1.0)
    fresh = jax.tree.map(jnp.zeros_like, target)
    assert_tree_equal(load_params_for_init(root, fresh), target)
