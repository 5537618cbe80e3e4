"""Checkpointer: retention, exact restore, corruption fallback, tmp dirs, resharding, kills."""

import glob
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxformer.checkpoint import (
  Checkpointer,
  CheckpointError,
  CorruptCheckpointWarning,
  Restored,
  abstract_like,
)


def make_state(seed: int = 0):
  """A tiny train state with everything a real one has: params, optax tuples, step, typed key."""
  rng = np.random.default_rng(seed)
  params = {
    'backbone': {'w': jnp.asarray(rng.normal(size=(64, 16)), jnp.float32)},
    'head': {'b': jnp.asarray(rng.normal(size=(16,)), jnp.float32)},
  }
  opt_state = optax.adamw(1e-3).init(params)
  return {
    'params': params,
    'opt_state': opt_state,
    'step': jnp.asarray(seed, jnp.int32),
    'rng': jax.random.key(seed),
  }


def assert_same(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def saved(directory, steps_and_losses, **kwargs):
  ckpt = Checkpointer(directory, **kwargs)
  for step, loss in steps_and_losses:
    ckpt.save(step, make_state(step), extra={'data': {'pos': step}}, val_loss=loss)
  ckpt.wait_until_finished()
  return ckpt


# When one array of a restore fails, orbax abandons the other reads' coroutines and Python
# reports them (whenever they are garbage-collected, so in any later test) as unraisable
# exceptions; that is orbax-internal noise, not a failure of ours.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def data_files(step_dir):
  files = [
    f
    for f in glob.glob(os.path.join(step_dir, 'params', '**', 'd', '*'), recursive=True)
    if os.path.isfile(f)
  ]
  return sorted(files, key=os.path.getsize)


def test_keeps_latest_two_plus_best_and_survives_restart(tmp_path):
  d = tmp_path / 'ckpt'
  ckpt = saved(d, [(10, 1.0), (20, 0.3), (30, 0.5), (40, 0.6), (50, None)])
  assert ckpt.all_steps() == [20, 40, 50]
  assert ckpt.best_step() == 20 and ckpt.latest_step() == 50
  ckpt.close()
  # The best is remembered across restarts (orbax re-reads each step's metrics).
  ckpt = Checkpointer(d)
  assert ckpt.best_step() == 20
  ckpt.save(60, make_state(60), val_loss=0.2)
  ckpt.save(70, make_state(70), val_loss=0.9)
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [60, 70]  # 60 is both the best and one of the latest two
  assert ckpt.best_step() == 60
  ckpt.close()


def test_keep_every_keeps_a_history_of_steps(tmp_path):
  losses = [(step, 1.0 - 0.01 * step) for step in range(1, 8)]  # the newest is also the best
  ckpt = saved(tmp_path / 'h', losses, keep_last=1, keep_every=3)
  assert ckpt.all_steps() == [3, 6, 7]  # multiples of 3, plus the newest
  ckpt.close()
  ckpt = saved(tmp_path / 'n', losses, keep_last=1)
  assert ckpt.all_steps() == [7]  # without it, nothing else survives
  ckpt.close()
  with pytest.raises(ValueError, match='keep_every'):
    Checkpointer(tmp_path / 'x', keep_every=-1)


def test_steps_without_val_loss_are_not_best(tmp_path):
  ckpt = saved(tmp_path / 'c', [(1, None), (2, None), (3, float('nan')), (4, None)], keep_last=1)
  assert ckpt.all_steps() == [4]
  assert ckpt.best_step() is None
  # restore_best falls back to the latest when no val_loss was ever recorded.
  assert ckpt.restore_best(abstract_like(make_state())).step == 4
  ckpt.close()


def test_restore_is_exact_and_keeps_types(tmp_path):
  ckpt = saved(tmp_path / 'c', [(3, 0.5), (7, None)])
  restored = ckpt.restore_latest(abstract_like(make_state()))
  assert isinstance(restored, Restored) and restored.step == 7
  assert restored.extra == {'data': {'pos': 7}} and restored.val_loss is None
  assert_same(restored.state, make_state(7))  # optax tuples stay tuples, the key stays a key
  assert isinstance(restored.state['opt_state'], tuple)
  assert jax.dtypes.issubdtype(restored.state['rng'].dtype, jax.dtypes.prng_key)
  # A target from jax.eval_shape (typed-key ShapeDtypeStruct, no sharding) works too.
  best = ckpt.restore_best(jax.eval_shape(lambda: make_state()))
  assert best.step == 3 and best.val_loss == 0.5
  assert_same(best.state, make_state(3))
  ckpt.close()


def test_restore_params_alone(tmp_path):
  saved(tmp_path / 'c', [(1, 0.2), (2, 0.4)]).close()
  ckpt = Checkpointer(tmp_path / 'c')  # a fresh one: no orbax handler is registered yet
  step, params = ckpt.restore_params()  # best step, no target: the saved shapes
  assert step == 1
  assert_same(params, make_state(1)['params'])
  step, params = ckpt.restore_params(2, abstract_like(make_state()['params']))
  assert step == 2
  assert_same(params, make_state(2)['params'])
  with pytest.raises(CheckpointError, match='no checkpoint step 5'):
    ckpt.restore_params(5)
  ckpt.close()


def test_bfloat16_params_round_trip(tmp_path):
  params = {'w': jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3) / 7}
  with Checkpointer(tmp_path / 'c') as ckpt:
    ckpt.save(1, {'params': params})
  step, restored = Checkpointer(tmp_path / 'c', read_only=True).restore_params()
  assert step == 1 and restored['w'].dtype == jnp.bfloat16
  assert_same(restored, params)


def test_empty_directory_restores_none(tmp_path):
  ckpt = Checkpointer(tmp_path / 'c')
  assert ckpt.restore_latest(abstract_like(make_state())) is None
  assert ckpt.restore_best(abstract_like(make_state())) is None
  assert ckpt.all_steps() == [] and ckpt.best_step() is None
  ckpt.close()


def test_model_shape_change_is_refused_and_nothing_moved(tmp_path):
  ckpt = saved(tmp_path / 'c', [(1, None), (2, None)])
  state = make_state()
  state['params']['backbone']['w'] = jnp.zeros((32, 16))
  with pytest.raises(
    CheckpointError,
    match=r'params/backbone/w: checkpoint float32\[64, 16\] vs model float32\[32, 16\]',
  ):
    ckpt.restore_latest(abstract_like(state))
  assert ckpt.all_steps() == [1, 2]
  assert not (tmp_path / 'c_corrupt').exists()
  ckpt.close()


def test_truncated_newest_falls_back_and_is_kept_aside(tmp_path):
  d = tmp_path / 'c'
  saved(d, [(1, None), (2, None)]).close()
  biggest = data_files(d / '2')[-1]
  with open(biggest, 'r+b') as f:
    f.truncate(os.path.getsize(biggest) // 2)
  ckpt = Checkpointer(d)
  with pytest.warns(CorruptCheckpointWarning, match=r'step 2 .* unusable .*could not read arrays'):
    restored = ckpt.restore_latest(abstract_like(make_state()))
  assert restored.step == 1
  assert_same(restored.state, make_state(1))
  assert ckpt.all_steps() == [1]
  assert (tmp_path / 'c_corrupt' / '2' / 'params').is_dir()  # kept for inspection
  # Training goes on and can save step 2 again.
  ckpt.save(2, make_state(2), wait=True)
  assert ckpt.all_steps() == [1, 2]
  ckpt.close()


def test_flipped_byte_is_caught_by_the_checksum(tmp_path):
  d = tmp_path / 'c'
  saved(d, [(1, None), (2, None)]).close()
  target = data_files(d / '2')[-1]
  original = open(target, 'rb').read()
  expected = make_state(2)['params']
  abstract = {'params': abstract_like(expected)}
  # Find a byte whose flip orbax restores *silently* with wrong values (most bytes do).
  for i in range(len(original) // 2, len(original)):
    corrupted = bytearray(original)
    corrupted[i] ^= 0x10
    open(target, 'wb').write(bytes(corrupted))
    try:
      with ocp.CheckpointManager(d) as raw:
        got = raw.restore(
          2, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract['params']))
        )
    except Exception:
      continue
    if not np.array_equal(got['params']['backbone']['w'], expected['backbone']['w']):
      break
  else:
    pytest.fail('no silent single-byte corruption found')
  ckpt = Checkpointer(d)
  with pytest.warns(
    CorruptCheckpointWarning, match='step 2 .*checksum mismatch in params/backbone/w'
  ):
    restored = ckpt.restore_latest(abstract_like(make_state()))
  assert restored.step == 1
  assert_same(restored.state, make_state(1))
  assert (tmp_path / 'c_corrupt' / '2').is_dir()
  ckpt.close()


def test_bad_metadata_json_and_bad_metrics_json(tmp_path):
  d = tmp_path / 'c'
  saved(d, [(1, 0.5), (2, 0.4), (3, 0.3)], keep_last=3).close()
  (d / '3' / 'meta' / 'metadata').write_text('{not json')
  (d / '2' / 'metrics' / 'metrics').write_text('{not json')  # orbax itself would crash on start-up
  with pytest.warns(CorruptCheckpointWarning, match='step 2 .*unreadable metrics JSON'):
    ckpt = Checkpointer(d, keep_last=3)
  with pytest.warns(CorruptCheckpointWarning, match='step 3 .*unreadable metadata JSON'):
    restored = ckpt.restore_latest(abstract_like(make_state()))
  assert restored.step == 1
  assert sorted(os.listdir(tmp_path / 'c_corrupt')) == ['2', '3']
  ckpt.close()


def test_no_good_checkpoint_is_a_clear_error(tmp_path):
  d = tmp_path / 'c'
  saved(d, [(1, None)]).close()
  os.remove(data_files(d / '1')[-1])
  ckpt = Checkpointer(d, corrupt_dir=tmp_path / 'bad')
  with pytest.warns(CorruptCheckpointWarning), pytest.raises(CheckpointError) as info:
    ckpt.restore_latest(abstract_like(make_state()))
  message = str(info.value)
  assert 'no usable checkpoint' in message and str(tmp_path / 'bad') in message
  assert '\n' not in message and 'tensorstore' not in message.lower()
  assert (tmp_path / 'bad' / '1').is_dir()
  ckpt.close()


def test_leftover_tmp_dir_is_removed_and_ignored(tmp_path):
  d = tmp_path / 'c'
  saved(d, [(1, None)]).close()
  junk = d / '2.orbax-checkpoint-tmp-1234'
  (junk / 'params').mkdir(parents=True)
  (junk / 'params' / 'half_written').write_bytes(b'\0' * 10)
  ckpt = Checkpointer(d)
  assert not junk.exists()
  assert ckpt.all_steps() == [1]
  assert ckpt.restore_latest(abstract_like(make_state())).step == 1
  ckpt.close()


def test_restore_onto_a_different_mesh(tmp_path):
  devices = np.array(jax.devices())
  assert len(devices) == 8, 'tests/conftest.py should give 8 CPU devices'
  mesh8 = Mesh(devices, ('data',))
  value = jnp.arange(8 * 12, dtype=jnp.float32).reshape(8, 12)
  state = {'params': {'w': jax.device_put(value, NamedSharding(mesh8, P('data', None)))}}
  ckpt = Checkpointer(tmp_path / 'c')
  ckpt.save(1, state, wait=True)

  mesh24 = Mesh(devices.reshape(2, 4), ('data', 'model'))
  on_2x4 = NamedSharding(mesh24, P('data', 'model'))
  restored = ckpt.restore_latest(abstract_like(state, shardings=on_2x4))
  w = restored.state['params']['w']
  assert w.sharding == on_2x4 and w.addressable_shards[0].data.shape == (4, 3)
  np.testing.assert_array_equal(np.asarray(w), np.asarray(value))

  one = jax.sharding.SingleDeviceSharding(jax.devices()[3])
  w = ckpt.restore_latest(abstract_like(state, shardings=one)).state['params']['w']
  assert w.sharding == one
  np.testing.assert_array_equal(np.asarray(w), np.asarray(value))
  ckpt.close()


def test_async_save_then_close_waits(tmp_path):
  d = tmp_path / 'c'
  big = {'params': {'w': jnp.ones((1024, 1024), jnp.float32)}}
  ckpt = Checkpointer(d)
  assert ckpt.save(1, big)  # returns while the write goes on in the background
  assert not ckpt.save(1, big)  # the same step twice is a no-op, not an orbax error
  ckpt.close()
  assert os.listdir(d) == ['1']
  with Checkpointer(d) as again:
    restored = again.restore_latest(abstract_like(big))
  assert restored.step == 1 and float(restored.state['params']['w'].sum()) == 1024 * 1024


def test_bad_arguments_are_clear(tmp_path):
  with pytest.raises(ValueError, match='keep_last'):
    Checkpointer(tmp_path / 'a', keep_last=0)
  ckpt = Checkpointer(tmp_path / 'c')
  with pytest.raises(ValueError, match="'meta' is not allowed"):
    ckpt.save(1, {'meta': {'x': jnp.ones(2)}})
  with pytest.raises(ValueError, match='not JSON-serializable'):
    ckpt.save(1, make_state(), extra={'it': object()})
  ckpt.close()
  reader = Checkpointer(tmp_path / 'c', read_only=True)
  with pytest.raises(CheckpointError, match='read-only'):
    reader.save(1, make_state())


KILL_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import jax.numpy as jnp, numpy as np
    from jaxformer.checkpoint import Checkpointer
    ckpt = Checkpointer(sys.argv[1])
    ckpt.save(1, {"params": {"w": jnp.full((4, 4), 1.0)}}, wait=True)
    big = np.random.default_rng(0).normal(size=(2048, 4096)).astype(np.float32)  # 32 MiB
    ckpt.save(2, {"params": {"w": jnp.asarray(big)}})  # asynchronous: returns mid-write
    # Kill as soon as the half-written save is on disk: a fixed delay misses it on a loaded host.
    for _ in range(20000):
        if any(".orbax-checkpoint-tmp" in name for name in os.listdir(sys.argv[1])):
            break
        time.sleep(0.001)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_during_async_save_resumes_from_previous_step(tmp_path):
  d = tmp_path / 'c'
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    [sys.executable, '-c', KILL_CHILD, str(d)], env=env, capture_output=True, timeout=120
  )
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
  assert any('.orbax-checkpoint-tmp' in name for name in os.listdir(d))  # the half-written save
  ckpt = Checkpointer(d)
  assert ckpt.all_steps() == [1]
  assert not any('.orbax-checkpoint-tmp' in name for name in os.listdir(d))
  restored = ckpt.restore_latest({'params': {'w': jax.ShapeDtypeStruct((4, 4), jnp.float32)}})
  assert restored.step == 1
  np.testing.assert_array_equal(np.asarray(restored.state['params']['w']), np.ones((4, 4)))
  ckpt.close()
