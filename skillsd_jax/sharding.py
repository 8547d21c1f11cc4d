"""Meshes, the one table mapping logical axis names to mesh axes, and multi-host start-up.

Model code names axes logically ("embed", "heads", ...). This module alone knows the mesh
`('data', 'fsdp', 'tensor')`: batch over data x fsdp, parameters' embed dim over fsdp (ZeRO-3 style),
heads / mlp / vocab over tensor.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Iterable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axis (or tuple of mesh axes, or None = replicated). The one rules table.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("seq", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data','fsdp','tensor') mesh with Auto axis types; `-1` takes the devices left over."""
    devices = list(devices if devices is not None else jax.devices())
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices are not divisible by fsdp*tensor*... = {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = {math.prod(sizes)} "
                         f"does not match the {len(devices)} available devices")
    grid = np.asarray(devices).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def logical_to_pspec(logical_axes: Iterable[str | None] | None, shape: Sequence[int] | None = None,
                     mesh: Mesh | None = None, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> P:
    """PartitionSpec for an array with the given logical axes.

    A mesh axis is used at most once per array; a dimension not divisible by its mesh axes' size is
    replicated instead (and logged), so odd vocabularies still load on any mesh.
    """
    if logical_axes is None:
        return P()
    table = dict(rules)
    used: set[str] = set()
    spec: list[Any] = []
    for dim, name in enumerate(logical_axes):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape.get(a, 1) > 1))
        if axes and mesh is not None and shape is not None:
            size = math.prod(mesh.shape[a] for a in axes)
            if shape[dim] % size:
                log.info("replicating logical axis %r (dim %d of size %d not divisible by %d)", name, dim, shape[dim], size)
                axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def state_shardings(state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
    """NamedShardings for an `nnx.State` (or any pytree of Variables) from their `logical_axes` metadata."""

    def one(v: Any) -> NamedSharding:
        if isinstance(v, nnx.Variable):
            axes = v.get_metadata().get("logical_axes")
            shape = v.get_value().shape
            return v.replace(NamedSharding(mesh, logical_to_pspec(axes, shape, mesh, rules)))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_state(state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
    """Places an existing state on the mesh."""
    return jax.device_put(state, state_shardings(state, mesh, rules))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading dim over ('data','fsdp'), the rest replicated."""
    axes = tuple(a for a in BATCH_AXES if mesh.shape.get(a, 1) > 1)
    lead = None if not axes else axes[0] if len(axes) == 1 else axes
    return NamedSharding(mesh, P(lead, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Multi-host start-up (TPU pods, multi-node GPU). Call once per process before building meshes.

    On Cloud TPU and SLURM the arguments are discovered automatically; pass them elsewhere.
    """
    # Must run before anything touches a JAX backend (jax.process_count() would start one).
    if jax.distributed.is_initialized():
        return
    kwargs = {k: v for k, v in dict(coordinator_address=coordinator_address, num_processes=num_processes,
                                     process_id=process_id).items() if v is not None}
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed initialized: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def split_cpu_devices(count: int) -> int:
    """Splits the host CPU into `count` XLA devices (0: one per core) and returns the count; a no-op on
    GPU/TPU, whose devices are unaffected. Must run before JAX starts its backends.

    On CPU one device runs a step's operations one after another, each spread over the cores; the
    many small operations of a decode step (or of a short-sequence update) leave most cores idle.
    With one device per core and the batch sharded over them (the `data` mesh axis), each core works
    on its own rows side by side.
    """
    if count < 0:
        raise ValueError(f"cpu_devices must be >= 0 (0 = one per core), got {count}")
    count = count or len(os.sched_getaffinity(0))
    if jax.config.jax_num_cpu_devices == count:
        return count
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as e:  # a backend already started: fine if with this count
        if len(jax.devices("cpu")) == count:
            return count
        raise RuntimeError(f"cpu_devices={count}: JAX already started its backends; split the CPU before any "
                           "JAX operation runs (or set XLA_FLAGS=--xla_force_host_platform_device_count="
                           f"{count} before starting Python)") from e
    return count
