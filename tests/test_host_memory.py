"""jaxformer.host_memory: with its malloc settings, a repeated XLA:CPU program stops page-faulting
its temporaries; without them (or when they come too late) it faults on every call."""

import os
import statistics
import subprocess
import sys

import pytest

from jaxformer import host_memory

pytestmark = pytest.mark.skipif(not host_memory.glibc_linux(), reason='glibc malloc settings')

# A train-step-like program: the gradient of a [4096, 4096] intermediate (64 MB, more than
# glibc's largest mmap threshold), run 16 times; prints whether the settings are in effect and the
# minor page faults of each call.
PROGRAM = """
import resource
import jaxformer
import jax, jax.numpy as jnp

step = jax.jit(jax.grad(lambda x: jnp.sum(jnp.tanh(x @ x.T))))
x = jnp.full((4096, 64), 0.01, jnp.float32)
faults = []
for _ in range(16):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  jax.block_until_ready(step(x))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(jaxformer.host_memory.keep_freed_memory(), *faults)
"""

PAGES = 4096 * 4096 * 4 // 4096  # pages of the intermediate


def run(program: str, keep: str) -> list[str]:
  """stdout of `program` in a fresh CPU process, split; JAXFORMER_KEEP_HOST_MEMORY=keep."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', host_memory.ENV: keep}
  out = subprocess.run([sys.executable, '-c', program], env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  return out.stdout.split()


def test_kept_memory_stops_the_page_faults_of_every_step():
  applied, *faults = run(PROGRAM, keep='1')
  assert applied == 'True'
  # The heap settles within the first calls (blocks move while it grows); from then on a call
  # faults (almost) nothing.
  assert statistics.median(map(int, faults[-8:])) < PAGES // 8, faults

  # The control: glibc's defaults fault the intermediate back in on every call.
  applied, *faults = run(PROGRAM, keep='0')
  assert applied == 'False'
  assert statistics.median(map(int, faults[-8:])) > PAGES // 2, faults


def test_settings_are_skipped_once_jax_is_imported():
  # Set late, the one-arena limit misses arenas that threads already hold: skip instead.
  program = 'import jax, jaxformer; print(jaxformer.host_memory.keep_freed_memory())'
  assert run(program, keep='1') == ['False']
