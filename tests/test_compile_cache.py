"""jaxformer.training.compile_cache: a program compiled with one usable core is not served from
the persistent cache to a process that may use more (XLA:CPU plans its threads at compile time),
while the same core count still reads it back."""

import json
import os
import subprocess
import sys

import pytest

from jaxformer.training import compile_cache

# Pins itself to the cores in argv[2] before jax starts, turns the cache on under argv[1], compiles
# one program and prints the cache's hits and misses.
PROGRAM = """
import json, os, sys
os.sched_setaffinity(0, [int(c) for c in sys.argv[2].split(',')])
import jax, jax.numpy as jnp
from jaxformer.training import compile_cache

compile_cache.enable(sys.argv[1])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)  # the toy compiles quickly
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))))
counts = {k: events.count(f'/jax/compilation_cache/cache_{k}') for k in ('hits', 'misses')}
print(json.dumps(counts))
"""


def compile_with(root: str, cores: list[int]) -> dict:
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  args = [sys.executable, '-c', PROGRAM, root, ','.join(map(str, cores))]
  out = subprocess.run(args, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, 'sched_getaffinity'), reason='needs CPU affinity')
def test_one_core_program_is_not_served_to_more_cores(tmp_path):
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    pytest.skip('needs two usable cores')
  root = str(tmp_path)
  first = compile_with(root, cores[:1])
  assert first['hits'] == 0 and first['misses'] > 0
  assert compile_with(root, cores) == first  # compiled again, for all the cores
  assert compile_with(root, cores[:1]) == {'hits': first['misses'], 'misses': 0}  # read back
  assert sorted(os.listdir(root)) == sorted({'cpus-1', f'cpus-{len(cores)}'})


def test_directory_is_keyed_by_usable_cores_and_can_be_off(monkeypatch):
  monkeypatch.setenv(compile_cache.ENV, 'somewhere')
  expected = os.path.join('somewhere', f'cpus-{compile_cache.usable_cores()}')
  assert compile_cache.directory() == expected
  monkeypatch.setenv(compile_cache.ENV, '')
  assert compile_cache.directory() is None
  assert compile_cache.enable() is None
