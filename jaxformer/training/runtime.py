"""Where arrays live: a device mesh (jit + NamedSharding, the default) or pmap replicas.

The loop talks to a runtime and never to devices directly:
  rt = make_runtime(config)             the mesh (or pmap) this config asks for, validated
  state = rt.jit_init(fn, shardings)()  parameters and optimizer state created already sharded
  batch = rt.put_batch(numpy_batch)     per-process rows -> one global array
  step  = rt.compile_train(fn, ...)     jit with shardings, traced under the mesh and the rules
Placement itself (meshes, rules, shardings, validation) is decided in jaxformer.sharding; this
module only applies it. Checkpoints always hold the "canonical" state (one copy, laid out on the
mesh), so a run saved under pmap, or on one mesh shape, restores under another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer import sharding as jf_sharding
from jaxformer.training.errors import ConfigError

PMAP_AXIS = 'devices'


def config_mesh(config):
  """The ('data', 'model') mesh of `config.mesh_shape`; a bad shape is a one-line ConfigError."""
  try:
    return jf_sharding.make_mesh(tuple(int(x) for x in config.mesh_shape))
  except ValueError as e:
    raise ConfigError(f'{e}; change mesh_shape') from None


def make_runtime(config):
  """MeshRuntime, or PmapRuntime for parallelism='pmap'; checks that the batch splits evenly."""
  runtime = (PmapRuntime if config.parallelism == 'pmap' else MeshRuntime)(config)
  try:
    jf_sharding.validate_batch_size(int(config.batch_size), runtime.mesh)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  runtime.check_micro_batches(config)
  return runtime


def check_model_fits(runtime, model_cfg) -> None:
  """Heads, MLP units, vocabulary (and d_model under FSDP) must split over the mesh axes."""
  try:
    jf_sharding.validate_mesh_for_model(model_cfg, runtime.mesh, runtime.rules)
  except ValueError as e:
    raise ConfigError(str(e)) from None


def state_shardings(tx, abstract_boxed_params, abstract_state, mesh, rules):
  """NamedShardings for {'step','params','opt_state','rng'} from the params' logical axes."""
  params = jf_sharding.param_shardings(abstract_boxed_params, mesh, rules)
  opt = jf_sharding.optimizer_state_shardings(tx, abstract_state['opt_state'], params, mesh)
  replicated = jf_sharding.replicated(mesh)
  return {'step': replicated, 'params': params, 'opt_state': opt, 'rng': replicated}


class MeshRuntime:
  """jit over a ('data', 'model') mesh; steps are traced under the mesh and the logical rules."""

  kind = 'mesh'  # the config's `parallelism`
  axis_name = None  # collectives are implicit: the steps are written for one global batch

  def __init__(self, config):
    self.mesh = config_mesh(config)
    self.rules = jf_sharding.rules_for(bool(config.fsdp))
    self.batch_sharding = jf_sharding.batch_sharding(self.mesh)
    self.replicated = jf_sharding.replicated(self.mesh)

  def check_micro_batches(self, config) -> None:
    """grad_accum_steps splits the global batch (checked in setup.check_batch_split)."""

  def describe(self) -> str:
    """Mesh shape and what each axis of size > 1 splits, e.g. 'batch over data; heads ...'."""
    shape = dict(self.mesh.shape)
    split = []
    for axis, size in shape.items():
      logical = [name for name, mesh_axis in self.rules if mesh_axis == axis]
      if size > 1 and logical:
        split.append(f'{", ".join(logical)} over {axis}')
    mesh = ' '.join(f'{axis}={size}' for axis, size in shape.items())
    return f'mesh {mesh}: ' + ('; '.join(split) if split else 'nothing sharded (one device)')

  def state_shardings(self, tx, abstract_boxed_params, abstract_state):
    return state_shardings(tx, abstract_boxed_params, abstract_state, self.mesh, self.rules)

  def jit_init(self, fn: Callable, shardings):
    """Runs `fn` under jit with out_shardings: the full model never sits on one device."""
    return jax.jit(fn, out_shardings=shardings)

  def context(self):
    """The mesh and the logical rules: what `nn.with_logical_constraint` needs to act."""
    return jf_sharding.placement(self.mesh, self.rules)

  def to_canonical(self, state):
    """The layout saved in checkpoints: the mesh layout itself."""
    return state

  def from_canonical(self, state):
    return state

  def place(self, tree, shardings):
    """A canonical (sub)tree, e.g. an updated optimizer state, put where the steps expect it."""
    return jax.device_put(tree, shardings)

  def host_metrics(self, metrics):
    """Metrics fetched to the host, in one copy."""
    return metrics

  def put_batch(self, batch: dict[str, np.ndarray]):
    """Per-process numpy rows -> global jax.Arrays split over 'data'."""
    return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch
    )

  def compile_train(self, train_step, state_shardings):
    step = jax.jit(
      train_step,
      in_shardings=(state_shardings, self.batch_sharding),
      out_shardings=(state_shardings, self.replicated),
      donate_argnums=(0,),
    )
    return TracedUnder(step, self.context)

  def compile_eval(self, eval_step, params_shardings):
    step = jax.jit(
      eval_step, in_shardings=(params_shardings, self.batch_sharding), out_shardings=self.replicated
    )
    return TracedUnder(step, self.context, wait=_collectives_need_order())


def _collectives_need_order() -> bool:
  """True on CPU with several devices, where calls that do not depend on each other must not
  overlap.

  The CPU client may run independent executions (e.g. evaluation batches, which share only the
  parameters) at the same time. Across processes their collectives (gloo) then pair up in
  different orders on different processes: a whole-split evaluation deadlocked part-way in
  tests/test_parallel.py::test_two_processes_match_one_process. Within one process of several
  CPU devices (the tests' simulated devices), the clean-clone slow suite aborted twice in
  test_parallel's multi-device runs ("Fatal Python error: Aborted", no XLA message; the second
  time inside a final evaluation). We have not reproduced it at will; waiting rules out the
  overlap. Training steps are chained through the state, so only evaluation needs to wait. A CPU
  run on one device, and TPU or GPU, which run each device's programs in order, do not wait.
  """
  return jax.default_backend() == 'cpu' and jax.device_count() > 1


class TracedUnder:
  """A jitted function that is always traced, lowered and called inside `context()`.

  jit traces on the first call, so the context must be live then; entering it on every call
  also keeps jit's cache key (which includes the current mesh) the same from call to call.
  """

  def __init__(
    self, jitted, context: Callable[[], contextlib.AbstractContextManager], wait: bool = False
  ):
    self.jitted, self.context, self.wait = jitted, context, wait

  def __call__(self, *args):
    with self.context():
      out = self.jitted(*args)
    return jax.block_until_ready(out) if self.wait else out

  def lower(self, *args):
    with self.context():
      return self.jitted.lower(*args)


class PmapRuntime:
  """Data parallelism with jax.pmap: one replica of the state per local device.

  The steps see `axis_name` and reduce over it themselves (steps.py). Checkpoints still hold
  the canonical state, laid out on a (devices, 1) mesh, so they restore under either runtime.
  """

  kind = 'pmap'
  axis_name = PMAP_AXIS

  def __init__(self, config):
    del config  # mesh_shape does not apply: pmap replicates over every device
    self.mesh = jf_sharding.make_mesh((jax.device_count(), 1))  # the canonical layout
    self.rules = jf_sharding.LOGICAL_AXIS_RULES
    self.n_local = jax.local_device_count()

  def describe(self) -> str:
    return f'pmap over {self.n_local} local devices: batch split, parameters replicated'

  def check_micro_batches(self, config) -> None:
    """Each replica splits its own rows into grad_accum_steps micro-batches."""
    per_device = config.batch_size // jax.process_count() // self.n_local
    if per_device % config.grad_accum_steps:
      raise ConfigError(
        f'parallelism=pmap gives each device {per_device} rows of batch_size '
        f'{config.batch_size}, not divisible by grad_accum_steps {config.grad_accum_steps}: use '
        f'a batch_size that is a multiple of {jax.device_count() * config.grad_accum_steps}'
      )

  def state_shardings(self, tx, abstract_boxed_params, abstract_state):
    """The canonical state's shardings (model axis 1: every parameter is whole on each device)."""
    return state_shardings(tx, abstract_boxed_params, abstract_state, self.mesh, self.rules)

  def jit_init(self, fn: Callable, shardings):
    return jax.jit(fn, out_shardings=shardings)

  def context(self):
    return contextlib.nullcontext()  # pmap has no mesh: the constraints stay inert

  def to_canonical(self, state):
    """pmap replicas -> the first copy."""
    return jax.tree.map(lambda x: x[0], state)

  def from_canonical(self, state):
    """Canonical state -> one replica per local device."""
    devices = jax.local_devices()
    return jax.tree.map(lambda x: _replicate(x, devices), state)

  def place(self, tree, shardings):
    del shardings  # every replica holds the whole tree
    return self.from_canonical(tree)

  def host_metrics(self, metrics):
    return jax.tree.map(lambda x: x[0], metrics)  # psum-ed: every replica holds the same value

  def put_batch(self, batch: dict[str, np.ndarray]):
    """Per-process numpy rows -> [local devices, rows / local devices, ...]."""
    return jax.tree.map(lambda x: x.reshape((self.n_local, -1) + x.shape[1:]), batch)

  def compile_train(self, train_step, state_shardings):
    del state_shardings
    return jax.pmap(train_step, axis_name=PMAP_AXIS, donate_argnums=(0,))

  def compile_eval(self, eval_step, params_shardings):
    del params_shardings
    step = jax.pmap(eval_step, axis_name=PMAP_AXIS)
    if _collectives_need_order():
      return lambda params, batch: jax.block_until_ready(step(params, batch))[0]
    return lambda params, batch: step(params, batch)[0]


def _replicate(x, devices):
  """One copy of `x` per device, stacked on a new leading axis (what pmap expects)."""
  return jax.device_put(jnp.stack([x] * len(devices)), jf_sharding.stacked_over(devices, PMAP_AXIS))
