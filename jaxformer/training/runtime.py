"""Where arrays live: a device mesh (jit + NamedSharding, the default) or pmap replicas.

The loop talks to a Runtime and never to devices directly:
  state = rt.init_state(...)          parameters and optimizer state created already sharded
  batch = rt.put_batch(numpy_batch)   per-process rows -> one global array
  step  = rt.compile_train(fn)        jit with shardings (or pmap with an axis name)
Checkpoints always hold the "canonical" state (one copy, laid out on the mesh), so a run saved
under pmap, or on one mesh shape, restores under another.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxformer import sharding as jf_sharding

PMAP_AXIS = 'devices'


class Runtime:
  """Lays out train state and batches for `parallelism` = 'mesh' or 'pmap'."""

  def __init__(self, config, mesh_axes: tuple[int, int]):
    self.kind = config.parallelism
    self.axis_name = PMAP_AXIS if self.kind == 'pmap' else None
    data, model = mesh_axes if self.kind == 'mesh' else (jax.device_count(), 1)
    devices = np.asarray(jax.devices()[: data * model])
    self.mesh = jax.make_mesh(
      (data, model),
      ('data', 'model'),
      devices=devices,
      axis_types=(jax.sharding.AxisType.Auto,) * 2,
    )
    self.rules = jf_sharding.FSDP_RULES if config.fsdp else jf_sharding.LOGICAL_AXIS_RULES
    self.batch_sharding = NamedSharding(self.mesh, P('data'))
    self.replicated = NamedSharding(self.mesh, P())
    self.n_local = jax.local_device_count()

  # ------------------------------------------------------------------ state
  def state_shardings(self, abstract_boxed_params, abstract_state):
    """NamedShardings for {'step','params','opt_state','rng'} from the params' logical axes.

    Optimizer moments mirror their parameter's sharding: an optimizer-state leaf whose path
    ends with a parameter's path (e.g. `.mu['backbone']['layers']...`) and has its shape takes
    that parameter's sharding; counters and other scalars are replicated.
    """
    with nn.logical_axis_rules(self.rules):
      specs = nn.get_partition_spec(abstract_boxed_params)
      params = nn.logical_to_mesh_sharding(specs, self.mesh, self.rules)
    by_path = {
      jax.tree_util.keystr(path): (sharding, leaf.shape)
      for (path, sharding), leaf in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(abstract_state['params'])
      )
    }

    def like_param(path, leaf):
      for i in range(len(path)):
        sharding, shape = by_path.get(jax.tree_util.keystr(path[i:]), (None, None))
        if sharding is not None and shape == leaf.shape:
          return sharding
      return self.replicated

    opt = jax.tree_util.tree_map_with_path(like_param, abstract_state['opt_state'])
    return {'step': self.replicated, 'params': params, 'opt_state': opt, 'rng': self.replicated}

  def jit_init(self, fn: Callable, shardings):
    """Runs `fn` under jit with out_shardings: the full model never sits on one device."""
    return jax.jit(fn, out_shardings=shardings)

  def to_canonical(self, state):
    """Mesh layout as saved in checkpoints (pmap replicas -> the first copy)."""
    if self.kind == 'pmap':
      return jax.tree.map(lambda x: x[0], state)
    return state

  def from_canonical(self, state):
    """Canonical state -> this runtime's layout (pmap: one replica per local device)."""
    if self.kind == 'pmap':
      devices = jax.local_devices()
      return jax.tree.map(lambda x: _replicate(x, devices), state)
    return state

  # ------------------------------------------------------------------ batches
  def put_batch(self, batch: dict[str, np.ndarray]):
    """Per-process numpy rows -> device arrays: global jax.Arrays (mesh) or [devices, rows/devices, ...]."""
    if self.kind == 'pmap':
      return jax.tree.map(lambda x: x.reshape((self.n_local, -1) + x.shape[1:]), batch)
    return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch
    )

  # ------------------------------------------------------------------ steps
  def compile_train(self, train_step, state_shardings):
    if self.kind == 'pmap':
      return jax.pmap(train_step, axis_name=PMAP_AXIS, donate_argnums=(0,))
    return jax.jit(
      train_step,
      in_shardings=(state_shardings, self.batch_sharding),
      out_shardings=(state_shardings, self.replicated),
      donate_argnums=(0,),
    )

  def compile_eval(self, eval_step, params_shardings):
    if self.kind == 'pmap':
      step = jax.pmap(eval_step, axis_name=PMAP_AXIS)
      return lambda params, batch: step(params, batch)[0]
    return jax.jit(
      eval_step, in_shardings=(params_shardings, self.batch_sharding), out_shardings=self.replicated
    )


def _replicate(x, devices):
  """One copy of `x` per device, stacked on a new leading axis (what pmap expects)."""
  mesh = jax.sharding.Mesh(np.asarray(devices), (PMAP_AXIS,))
  return jax.device_put(jnp.stack([x] * len(devices)), NamedSharding(mesh, P(PMAP_AXIS)))
