"""Scale-out: every mesh shape trains identically, heads really are split, pmap == mesh,
multi-host == single host, and a checkpoint restores onto another topology."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import REPO
from jaxformer.configs import tiny

from jaxformer.checkpoint import Checkpointer
from jaxformer.training.errors import ConfigError
from jaxformer.training.loop import train_and_evaluate
from jaxformer.training.prepare import prepare


def _config(mesh_shape=(-1, 1), **overrides):
  c = tiny.get_config()
  c.model.d_model, c.model.num_heads, c.model.mlp_ratio = (
    32,
    8,
    4.0,
  )  # 8 heads, d_ff 128: split 8 ways
  c.dataset.tokenizer, c.dataset.vocab_size = 'sentencepiece', 512
  c.num_train_steps, c.eval_every_steps, c.eval_steps, c.log_every_steps = 5, 5, 1, 1
  c.sample_tokens = 0  # no sampling report: it would only add compile time here
  c.model.scan_layers = True  # the stacked layout these checks index ('layers'/'layer')
  c.mesh_shape = mesh_shape
  for key, value in overrides.items():
    target = c
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return c


def _losses(workdir):
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [r['loss'] for r in rows if r['split'] == 'train']


def _final_params(workdir, step):
  with Checkpointer(os.path.join(workdir, 'checkpoints')) as ckpt:
    return ckpt.restore_params(step)[1]


def _assert_trees_close(a, b, tol=1e-5):
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol), a, b
  )


@pytest.fixture(scope='module')
def mesh_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('mesh')
  runs = {}
  for shape in [(1, 1), (8, 1), (4, 2), (2, 4), (1, 8)]:
    workdir = str(root / f'{shape[0]}x{shape[1]}')
    train_and_evaluate(_config(shape), workdir)
    runs[shape] = workdir
  # FSDP: weights split over 'data' too, the same placement code and validation.
  runs['fsdp 4x2'] = str(root / 'fsdp-4x2')
  train_and_evaluate(_config((4, 2), fsdp=True), runs['fsdp 4x2'])
  return runs


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_every_mesh_shape_gives_the_same_losses_and_params(mesh_runs):
  ref = mesh_runs[(1, 1)]
  ref_losses, ref_params = _losses(ref), _final_params(ref, 5)
  assert len(ref_losses) == 5
  for shape, workdir in mesh_runs.items():
    np.testing.assert_allclose(_losses(workdir), ref_losses, rtol=1e-5, err_msg=str(shape))
    _assert_trees_close(_final_params(workdir, 5), ref_params)


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_heads_and_mlp_are_split_over_the_model_axis(mesh_runs):
  report = json.load(open(os.path.join(mesh_runs[(2, 4)], 'partitioning.json')))
  qkv = {
    k: v
    for k, v in report.items()
    if any(n in k for n in ('query', 'key', 'value')) and 'kernel' in k
  }
  assert len(qkv) == 3
  for entry in qkv.values():
    heads = entry['logical_axes'].index('heads')
    assert entry['global_shape'][heads] == 8 and entry['shard_shape'][heads] == 2  # 8 heads / 4
  mlp = [v for k, v in report.items() if 'mlp' in v['logical_axes']]
  assert mlp and all(v['shard_shape'][v['logical_axes'].index('mlp')] == 128 // 4 for v in mlp)
  # And the live arrays agree with the report: ask the devices themselves.
  s = prepare(_config((2, 4)), mesh_runs[(2, 4)])
  q = s.shardings['params']['backbone']['layers']
  shard_shapes = {
    jax.tree_util.keystr(p): sh.shard_shape(a.shape)
    for (p, sh), a in zip(
      jax.tree_util.tree_flatten_with_path(q)[0],
      jax.tree.leaves(s.abstract_state['params']['backbone']['layers']),
    )
  }
  query = next(v for k, v in shard_shapes.items() if 'query' in k and 'kernel' in k)
  assert query[-2] == 2  # [layers, embed, heads/4, head_dim]


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_pmap_matches_mesh_with_dropout_off(tmp_path):
  runs = {}
  for name, overrides in {'pmap': {'parallelism': 'pmap'}, 'mesh': {'mesh_shape': (8, 1)}}.items():
    workdir = str(tmp_path / name)
    train_and_evaluate(_config(**{'model.dropout_rate': 0.0, **overrides}), workdir)
    runs[name] = workdir
  np.testing.assert_allclose(_losses(runs['pmap']), _losses(runs['mesh']), rtol=1e-5)
  _assert_trees_close(_final_params(runs['pmap'], 5), _final_params(runs['mesh'], 5))


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_checkpoint_restores_onto_other_meshes(mesh_runs, tmp_path):
  """Saved on (8, 1) at step 5; one more step on (8, 1), (2, 4) and 1 device gives the same loss."""
  losses = {}
  for shape in [(8, 1), (2, 4), (1, 1)]:
    workdir = str(tmp_path / f'{shape[0]}x{shape[1]}')
    shutil.copytree(mesh_runs[(8, 1)], workdir)
    train_and_evaluate(_config(shape, num_train_steps=6), workdir)
    losses[shape] = _losses(workdir)[-1]
  np.testing.assert_allclose(list(losses.values()), losses[(8, 1)], rtol=1e-5)


@pytest.mark.parametrize(
  'overrides,needle',
  [
    ({'mesh_shape': (1, 16)}, 'mesh_shape'),
    ({'mesh_shape': (2, 4), 'model.num_heads': 2, 'model.d_model': 32}, 'num_heads'),
    ({'mesh_shape': (1, 8), 'model.mlp_ratio': 0.0, 'model.d_ff': 36}, 'd_ff'),
    # 514 ids split 4 ways once padded (model.vocab_multiple=128), not without the padding.
    (
      {'mesh_shape': (2, 4), 'dataset.vocab_size': 514, 'model.vocab_multiple': 1},
      'vocab_multiple',
    ),
    ({'mesh_shape': (8, 1), 'batch_size': 12}, 'batch_size'),
    # FSDP splits d_model over 'data': 36 rows do not split 8 ways (setup.py once skipped this).
    ({'mesh_shape': (8, 1), 'fsdp': True, 'model.d_model': 36, 'model.num_heads': 4}, 'd_model'),
  ],
)
def test_bad_meshes_are_refused_before_compiling(overrides, needle, tmp_path):
  with pytest.raises(ConfigError, match=needle):
    prepare(_config(**overrides), str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad').exists()


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow  # tens of seconds on 2 cores: .ci/run runs it with `pytest -m slow`
def test_two_processes_match_one_process(tmp_path):
  """2 processes x 2 CPU devices on 127.0.0.1 train like 1 process x 4 devices."""
  args = [
    '--config=configs/tiny.py',
    '--config.num_train_steps=5',
    '--config.log_every_steps=1',
    '--config.eval_every_steps=5',
    '--config.eval_steps=1',
    '--config.sample_tokens=0',
  ]
  base = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  single = str(tmp_path / 'single')
  proc = subprocess.run(
    [sys.executable, 'train.py', *args, f'--workdir={single}'],
    cwd=REPO,
    env=dict(base, XLA_FLAGS='--xla_force_host_platform_device_count=4'),
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  multi, port = str(tmp_path / 'multi'), _free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, 'train.py', *args, f'--workdir={multi}'],
      cwd=REPO,
      env=dict(
        base,
        JAX_NUM_CPU_DEVICES='2',
        JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{port}',
        JAX_NUM_PROCESSES='2',
        JAX_PROCESS_ID=str(i),
      ),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  try:
    outs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
  fingerprints = [
    json.load(open(os.path.join(d, 'summary.json')))['params_fingerprint'] for d in (single, multi)
  ]
  assert all(len(f) == 64 for f in fingerprints)


@pytest.mark.parametrize('overrides', [{}, {'backbone_lr_multiplier': 0.5, 'fsdp': True}])
def test_optimizer_moments_take_their_parameters_shardings(overrides, tmp_path):
  """Adam's mu and nu are laid out like their parameters; counters and plateau state replicated.

  The second case splits the optimizer with optax.multi_transform (fine-tuning) and shards
  d_model over 'data' (FSDP), so the moments' layouts differ from leaf to leaf.
  """
  s = prepare(_config((2, 4), reduce_on_plateau=True, **overrides), str(tmp_path / 'run'))
  params = {
    jax.tree_util.keystr(p): sh.spec
    for p, sh in jax.tree_util.tree_flatten_with_path(s.shardings['params'])[0]
  }
  moments = 0
  for path, sharding in jax.tree_util.tree_flatten_with_path(s.shardings['opt_state'])[0]:
    names = [getattr(k, 'name', None) for k in path]
    if 'mu' in names or 'nu' in names:
      i = max(i for i, n in enumerate(names) if n in ('mu', 'nu'))
      assert sharding.spec == params[jax.tree_util.keystr(path[i + 1 :])], path
      moments += 1
    else:
      assert sharding.spec == jax.sharding.PartitionSpec(), path
  assert moments == 2 * len(params)
  assert any('model' in spec for spec in params.values())


def test_sampling_with_params_sharded_on_2x4_gives_the_tokens_of_one_device(tmp_path):
  """The end-of-run samples, decoded under the (2, 4) mesh and its rules, match (1, 1)'s."""
  from jaxformer.training import report

  samples = {}
  for shape in [(1, 1), (2, 4)]:
    s = prepare(_config(shape, sample_tokens=12), str(tmp_path / f'{shape}'))
    state = s.runtime.jit_init(s.make_state, s.shardings)(jax.random.key(0), jax.random.key(1))
    with s.runtime.context():
      samples[shape] = report.final_report(s, state['params'])['samples']
  assert samples[(2, 4)] == samples[(1, 1)] and len(samples[(1, 1)]) == 3
