"""Evaluation on several CPU devices waits for each batch (runtime._collectives_need_order)."""

import jax
from jaxformer.configs import tiny

from jaxformer.training import runtime


def test_evaluation_on_several_cpu_devices_waits_for_each_batch():
  """Independent evaluation calls must not overlap on several CPU devices: across processes
  their collectives deadlocked, within one process the slow suite aborted. The tests run on 8
  simulated CPU devices, so both runtimes' evaluation steps wait here; the result is the same."""
  assert jax.default_backend() == 'cpu' and jax.device_count() == 8
  config = tiny.get_config()
  config.mesh_shape = (8, 1)
  mesh = runtime.make_runtime(config)
  step = mesh.compile_eval(lambda params, batch: params['w'].sum() + batch['x'].sum(), None)
  assert step.wait
  params = {'w': jax.numpy.ones((4,))}
  batch = mesh.put_batch({'x': jax.numpy.ones((8, 2))})
  assert float(step(params, batch)) == 4.0 + 16.0
