"""Where every array lives: one table from logical axis names to mesh axes (t5x style).

The model names the axes of every parameter and of the main activations ('batch', 'embed',
'heads', 'mlp', ...). The whole placement policy is the table below: a 2-D mesh
('data', 'model') splits the batch across 'data' and attention heads, the MLP hidden units and
the vocabulary across 'model' (Megatron-style tensor parallelism). Rules are applied in order
and a mesh axis is used at most once per array, so in FSDP_RULES an activation
[batch, length, embed] keeps 'data' for its batch while a parameter [embed, mlp] puts its
'embed' axis on 'data' (ZeRO-3 / FSDP weight sharding).

Usage:
    mesh = make_mesh((4, 2))                                      # data=4, model=2
    rules = rules_for(fsdp=False)
    abstract = jax.eval_shape(model.init, key, tokens)            # boxed nn.Partitioned leaves
    shardings = param_shardings(abstract, mesh, rules)
    variables = jax.jit(model.init, out_shardings=shardings)(key, tokens)
    with placement(mesh, rules):                                  # while tracing a step
        logits = jax.jit(model.apply)(variables, tokens)
Use `placement` (jax.set_mesh), not `with mesh:`: flax's activation constraints only see
set_mesh, and outside `nn.logical_axis_rules` they are silent no-ops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxformer.config import ModelConfig

MESH_AXES = ('data', 'model')

LOGICAL_AXIS_RULES = (
  ('batch', 'data'),
  ('heads', 'model'),
  ('mlp', 'model'),
  ('vocab', 'model'),
  ('embed', None),
  ('kv', None),
  ('length', None),
  ('layers', None),
  ('classes', None),
)

FSDP_RULES = (
  ('batch', 'data'),
  ('heads', 'model'),
  ('mlp', 'model'),
  ('vocab', 'model'),
  ('embed', 'data'),  # parameters only: activations already use 'data' for their batch
  ('kv', None),
  ('length', None),
  ('layers', None),
  ('classes', None),
)


def rules_for(fsdp: bool):
  """The logical-axis table of a run: FSDP_RULES with `fsdp`, LOGICAL_AXIS_RULES otherwise."""
  return FSDP_RULES if fsdp else LOGICAL_AXIS_RULES


@contextlib.contextmanager
def placement(mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Iterator[None]:
  """Trace steps inside this: the model's `nn.with_logical_constraint` calls then take effect.

  Without it XLA's propagation from the parameter shardings decides where activations go, and
  it can choose badly: under FSDP it computed attention on the whole batch on every device.
  """
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def make_mesh(mesh_shape: Sequence[int] = (-1, 1), devices: Sequence[Any] | None = None) -> Mesh:
  """A ('data', 'model') mesh; one -1 entry takes all remaining devices.

  Axis types are Auto: jax.make_mesh's default Explicit axes make linen layers fail with
  "Contracting dimensions are sharded and it is ambiguous how the output should be sharded".
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = list(mesh_shape)
  if len(shape) != 2:
    raise ValueError(f'mesh_shape={tuple(mesh_shape)} must have 2 entries (data, model)')
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f'mesh_shape={tuple(mesh_shape)} must hold positive sizes and at most one -1')
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if len(devices) % known:
      raise ValueError(
        f'mesh_shape={tuple(mesh_shape)}: {len(devices)} devices are not divisible by {known}'
      )
    shape[shape.index(-1)] = len(devices) // known
  size = math.prod(shape)
  if size > len(devices):
    raise ValueError(
      f'mesh_shape={tuple(shape)} needs {size} devices but only {len(devices)} are available'
    )
  return jax.make_mesh(
    tuple(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices[:size]
  )


def param_shardings(abstract_variables: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
  """Tree of NamedSharding matching `abstract_variables` (boxed nn.Partitioned leaves).

  Leaves without logical names (e.g. the cache index) are replicated.
  """
  return nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_variables), mesh, rules)


def constrain_to_names(values: Any, abstract_boxed: Any) -> Any:
  """`values` laid out by the logical axis names of `abstract_boxed`'s leaves (e.g. a KV cache
  [batch, length, heads, kv]: batch over 'data', heads over 'model'), under the mesh and rules
  of the current `placement`; outside one it returns `values` unchanged.

  abstract_boxed: the same tree with nn.Partitioned leaves (jax.eval_shape of the model's
  init); unnamed leaves such as the cache index are replicated.
  """
  names = nn.get_partition_spec(abstract_boxed)
  return jax.tree.map(
    lambda x, spec: nn.with_logical_constraint(x, tuple(spec)),
    values,
    names,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def logical_axis_index(abstract_boxed: Any, name: str) -> Any:
  """For each leaf of `abstract_boxed`, the position of logical axis `name` (-1 if it has none).

  E.g. the batch axis of every KV-cache leaf: axis 1 under scanned layers [layers, batch, ...],
  axis 0 otherwise.
  """
  return jax.tree.map(
    lambda spec: tuple(spec).index(name) if name in tuple(spec) else -1,
    nn.get_partition_spec(abstract_boxed),
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Inputs [batch, ...] split over 'data', replicated over 'model'."""
  return NamedSharding(mesh, PartitionSpec('data'))


def unplaced_default() -> jax.sharding.Sharding:
  """Where an array that names no sharding goes (e.g. a checkpoint restored without a model):
  the first local device, or with several processes a copy on every device of every host."""
  if jax.process_count() == 1:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return replicated(make_mesh((-1, 1)))


def stacked_over(devices: Sequence[Any], axis_name: str) -> NamedSharding:
  """Arrays [len(devices), ...] split along their leading axis, one slice per device: the
  replicas that jax.pmap over `axis_name` takes."""
  return NamedSharding(Mesh(np.asarray(devices), (axis_name,)), PartitionSpec(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
  """One full copy on every device of `mesh` (step counters, random keys, metrics)."""
  return NamedSharding(mesh, PartitionSpec())


def optimizer_state_shardings(
  tx: optax.GradientTransformation, abstract_opt_state: Any, params_shardings: Any, mesh: Mesh
) -> Any:
  """Shardings for `tx`'s state: every parameter-shaped subtree (Adam's moments) takes the
  parameters' shardings, everything else (counters, schedule state) is replicated.

  optax finds the parameter-shaped subtrees by running `tx.init` on labelled placeholders, so
  this follows the optimizer's own structure instead of guessing from paths or shapes. Leaves
  of `abstract_opt_state` may be ShapeDtypeStructs (from jax.eval_shape).
  """
  return optax.tree_utils.tree_map_params(
    tx,
    lambda leaf, sharding: leaf if _is_masked(leaf) else sharding,
    abstract_opt_state,
    params_shardings,
    transform_non_params=lambda _: replicated(mesh),
    is_leaf=_is_masked,
  )


def _is_masked(leaf) -> bool:
  """multi_transform keeps a MaskedNode where a parameter belongs to another group's state."""
  return isinstance(leaf, optax.MaskedNode)


def partitioning_report(
  abstract_params: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES
) -> dict[str, dict]:
  """'path/to/kernel' -> {logical_axes, partition_spec, global_shape, shard_shape}, per
  parameter."""
  is_box = lambda x: isinstance(x, nn.Partitioned)
  report = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params, is_leaf=is_box)[0]:
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)
    axes = tuple(leaf.names) if is_box(leaf) else (None,) * len(leaf.shape)
    shape = tuple(leaf.value.shape if is_box(leaf) else leaf.shape)
    report[name] = dict(
      logical_axes=axes,
      partition_spec=nn.logical_to_mesh_axes(axes, rules),
      global_shape=shape,
      shard_shape=logical_shard_shape(shape, axes, mesh, rules),
    )
  return report


def logical_shard_shape(
  shape: Sequence[int], logical_axes: Sequence[str | None], mesh: Mesh, rules=LOGICAL_AXIS_RULES
) -> tuple[int, ...]:
  """The per-device shape of an array `shape` whose axes have these logical names, e.g. an
  activation [batch, length, heads, kv] on mesh (2, 4): (batch / 2, length, heads / 4, kv)."""
  return tuple(logical_sharding(logical_axes, mesh, rules).shard_shape(tuple(shape)))


def logical_sharding(
  logical_axes: Sequence[str | None], mesh: Mesh, rules=LOGICAL_AXIS_RULES
) -> NamedSharding:
  """Where an array whose axes have these logical names lives on `mesh`, e.g. a query kernel
  [embed, heads, kv] on (2, 4): heads split over 'model', replicated over 'data'. Its
  `devices_indices_map(shape)` tells which slice each device holds."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(tuple(logical_axes), rules))


def _mesh_axis_for(logical: str, rules) -> str | None:
  for name, mesh_axis in rules:
    if name == logical:
      return mesh_axis
  return None


def validate_mesh_for_model(cfg: ModelConfig, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> None:
  """Raise a one-line ValueError when `cfg` cannot be split on `mesh` under `rules`.

  Every logical axis that a rule maps to a mesh axis of size n must have a multiple of n
  entries: heads, MLP units and the (padded) vocabulary on 'model', and d_model too under FSDP.
  """
  checks = (
    ('heads', 'num_heads', cfg.num_heads),
    ('mlp', 'd_ff', cfg.ff_dim),
    ('vocab', 'vocab_size', cfg.padded_vocab_size),
    ('embed', 'd_model', cfg.d_model),
  )
  for logical, field, value in checks:
    mesh_axis = _mesh_axis_for(logical, rules)
    if mesh_axis is None or value == 0:
      continue
    n = mesh.shape[mesh_axis]
    if value % n:
      if field == 'vocab_size':
        raise ValueError(
          f'model.vocab_size={cfg.vocab_size} (padded to {value} by model.vocab_multiple='
          f"{cfg.vocab_multiple}) is not divisible by the mesh '{mesh_axis}' axis ({n}); set "
          f'model.vocab_multiple={math.lcm(128, n)} (or another multiple of {n})'
        )
      raise ValueError(
        f"model.{field}={value} is not divisible by the mesh '{mesh_axis}' axis ({n}); "
        f'change model.{field} or mesh_shape'
      )


def validate_batch_size(batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the 'data' axis."""
  n = mesh.shape['data']
  if batch_size % n:
    raise ValueError(
      f"batch_size={batch_size} is not divisible by the mesh 'data' axis ({n}); "
      f'use a multiple of {n} or change mesh_shape'
    )


def describe_mesh(mesh: Mesh) -> str:
  """One line for logs, e.g. 'mesh data=4 model=2 on 8 cpu devices'."""
  axes = ' '.join(f'{k}={v}' for k, v in mesh.shape.items())
  return f'mesh {axes} on {mesh.size} {np.ravel(mesh.devices)[0].platform} devices'
