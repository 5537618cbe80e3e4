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
    abstract = jax.eval_shape(model.init, key, tokens)            # boxed nn.Partitioned leaves
    shardings = param_shardings(abstract, mesh)
    with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
        variables = jax.jit(model.init, out_shardings=shardings)(key, tokens)
Use `jax.set_mesh`, not `with mesh:` (flax's activation constraints only see set_mesh).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
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


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Inputs [batch, ...] split over 'data', replicated over 'model'."""
  return NamedSharding(mesh, PartitionSpec('data'))


def partitioning_report(
  abstract_params: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES
) -> dict[str, dict]:
  """'path/to/kernel' -> {logical_axes, partition_spec, global_shape, shard_shape} for each parameter."""
  is_box = lambda x: isinstance(x, nn.Partitioned)
  report = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params, is_leaf=is_box)[0]:
    name = '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)
    axes = tuple(leaf.names) if is_box(leaf) else (None,) * len(leaf.shape)
    shape = tuple(leaf.value.shape if is_box(leaf) else leaf.shape)
    spec = nn.logical_to_mesh_axes(axes, rules)
    report[name] = dict(
      logical_axes=axes,
      partition_spec=spec,
      global_shape=shape,
      shard_shape=tuple(NamedSharding(mesh, spec).shard_shape(shape)),
    )
  return report


def _mesh_axis_for(logical: str, rules) -> str | None:
  for name, mesh_axis in rules:
    if name == logical:
      return mesh_axis
  return None


def validate_mesh_for_model(cfg: ModelConfig, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> None:
  """Raise a one-line ValueError when `cfg` cannot be split on `mesh` under `rules`."""
  if mesh.size > jax.device_count():
    raise ValueError(
      f'mesh of {mesh.size} devices is larger than the {jax.device_count()} available; shrink mesh_shape'
    )
  checks = (
    ('heads', 'num_heads', cfg.num_heads),
    ('mlp', 'ff_dim', cfg.ff_dim),
    ('vocab', 'vocab_size', cfg.vocab_size),
    ('embed', 'd_model', cfg.d_model),
  )
  for logical, field, value in checks:
    mesh_axis = _mesh_axis_for(logical, rules)
    if mesh_axis is None or value == 0:
      continue
    n = mesh.shape[mesh_axis]
    if value % n:
      raise ValueError(
        f'ModelConfig.{field}={value} is not divisible by mesh axis '
        f"'{mesh_axis}'={n}; change {field} or the mesh shape"
      )


def validate_batch_size(batch_size: int, mesh: Mesh) -> None:
  """The global batch must split evenly over the 'data' axis."""
  if batch_size % mesh.shape['data']:
    raise ValueError(
      f"batch_size={batch_size} is not divisible by mesh axis 'data'={mesh.shape['data']}; "
      'change batch_size or the mesh shape'
    )


def describe_mesh(mesh: Mesh) -> str:
  """One line for logs, e.g. 'mesh data=4 model=2 on 8 cpu devices'."""
  axes = ' '.join(f'{k}={v}' for k, v in mesh.shape.items())
  return f'mesh {axes} on {mesh.size} {np.ravel(mesh.devices)[0].platform} devices'
