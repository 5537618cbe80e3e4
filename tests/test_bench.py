"""Smoke tests for the benchmark (jaxformer.bench) and the peers_bench plug-in
(bench/jaxformer_peer.py)."""

import json
import math
import os
import re
import shlex
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_script

from jaxformer import bench, bench_models, host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_BENCH = os.path.join(os.path.dirname(ROOT), 'shared', 'bench', 'peers_bench.py')
XS = dict(vocab=512, n_layer=2, n_head=2, n_embd=64, block_size=64, batch=4, dropout=0.1)


@pytest.mark.slow  # moved out of the README suite to keep it under 10 minutes on 2 cores
def test_bench_cli_prints_json_lines_with_throughput_and_mfu():
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'jaxformer.bench',
      '--config',
      'XS',
      '--steps',
      '2',
      '--warmup',
      '1',
      '--only',
      'train',
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
  assert [r['measurement'] for r in rows] == ['train']
  train = rows[0]
  for key in (
    'tokens_per_s',
    'tokens_per_s_min',
    'tokens_per_s_max',
    'mfu',
    'compile_s',
    'peak_rss_mb',
    'matmul_peak_gflops',
    'flops_per_token',
  ):
    assert key in train, key
  assert train['tokens_per_s'] > 0 and 0 < train['mfu'] < 1.5 and math.isfinite(train['loss'])
  assert train['tokens_per_s_min'] <= train['tokens_per_s'] <= train['tokens_per_s_max']
  assert 'tokens_per_s_median' in proc.stderr  # the readable table


def test_peer_plugin_trains_without_peers_bench():
  plugin = load_script('bench/jaxformer_peer.py')
  peer = plugin.make_peer(XS, 0)
  assert peer.kind == 'train' and peer.tokens_per_step == 4 * 64
  peer.setup()
  assert peer.n_params_counted > 0
  assert peer.compile() > 0
  losses = [peer.step() for _ in range(3)]
  assert all(math.isfinite(x) for x in losses)
  assert abs(losses[0] - math.log(512)) < 0.5  # an untrained model predicts ~uniformly
  assert int(peer.state['step']) == 3


def test_synthetic_batches_are_the_peers_batches():
  from jaxformer.bench_models import synthetic_batches

  ours = synthetic_batches(XS)
  assert len(ours) == 4 and ours[0].shape == (4, 65) and ours[0].dtype == np.int32
  if os.path.exists(PEERS_BENCH):  # the shared script imports only the standard library at the top
    pb = load_script(PEERS_BENCH)
    for a, b in zip(ours, pb.make_batches(XS)):
      np.testing.assert_array_equal(a, b)


def bench_command_lines(script: str) -> list[list[str]]:
  """The arguments of every `python -m jaxformer.bench` line of a bench/*.sh script, with
  continuation lines joined and ${VAR:-default} replaced by its default."""
  with open(os.path.join(ROOT, 'bench', script)) as f:
    text = f.read().replace('\\\n', ' ')
  text = re.sub(r'\$\{\w+:-([^}]*)\}', r'\1', text)
  lines = [line for line in text.splitlines() if '-m jaxformer.bench' in line]
  return [shlex.split(line.split('-m jaxformer.bench', 1)[1]) for line in lines]


@pytest.mark.parametrize('script', ['tpu.sh', 'gpu.sh'])
def test_accelerator_scripts_ask_the_bench_for_m350_bf16_at_sequence_1024(script):
  """bench/tpu.sh and bench/gpu.sh cannot run here; their command lines must still parse."""
  commands = bench_command_lines(script)
  assert len(commands) == 1
  args = bench.parse_args(commands[0])
  assert args.config == 'M350' and args.only == 'train' and args.steps == 10
  cfg = bench_models.model_config(bench_models.CONFIGS[args.config], **args.overrides)
  assert cfg.compute_dtype == jnp.bfloat16 and cfg.max_len == 1024 and cfg.num_layers == 24


@pytest.mark.parametrize(
  'argv',
  [['--set', 'remat=sometimes'], ['--set', 'no_such_field=1'], ['--only', 'train,nothing']],
)
def test_bench_refuses_a_bad_command_line_before_running(argv, capsys):
  with pytest.raises(SystemExit) as info:
    bench.parse_args(['--config', 'XS', *argv])
  assert info.value.code == 2 and 'error:' in capsys.readouterr().err


@pytest.mark.slow  # two processes compile or load the default LM's train step (~20 s)
def test_host_memory_bench_compares_a_compiled_step_with_the_same_step_loaded_from_the_cache():
  if not host_memory.glibc_linux():
    pytest.skip('glibc malloc settings')
  proc = subprocess.run(
    [sys.executable, '-m', 'bench.host_memory', '--compiled', '--rounds', '1', '--steps', '2'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  compiled, loaded = (json.loads(line) for line in proc.stdout.splitlines() if line.strip())
  assert compiled['settings'] and loaded['settings']  # the comparison is about them
  assert compiled['program'] == 'compiled in the process' and compiled['cache_hits'] == 0
  # the second process runs the very program the first compiled, read back from the cache
  assert loaded['program'] == 'loaded from the cache' and loaded['cache_hits'] >= 1
  assert loaded['loss'] == compiled['loss'] and math.isfinite(loaded['loss'])
  assert compiled['tokens_per_s'] > 0 and loaded['tokens_per_s'] > 0
