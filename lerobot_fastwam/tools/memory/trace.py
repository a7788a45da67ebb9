"""How the memory planner traces: fake tensors (shapes and dtypes, no data) and a dispatch mode that adds up the
bytes of the storages alive after every operator, as an allocator without caching would hold them.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from ...configuration_fastwam import FastWAMConfig
from ...network import mot


def storage_bytes(tensors, block: int) -> int:
    """Bytes of the distinct storages under ``tensors``, each rounded up to ``block``."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[id(storage)] = -(-storage.nbytes() // block) * block
    return sum(seen.values())


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages that operators created inside this mode and that are still alive (``live``), and
    the most at once (``peak``): an allocator without caching, that rounds each allocation up to ``block``.

    An operator allocates the storages of its outputs that none of its inputs has (a view or an in-place
    result allocates nothing). A storage counts until its last tensor dies (a weak reference), so the peak is
    always right after some operator."""

    def __init__(self, block: int):
        super().__init__()
        self.block = block
        self.live = self.peak = 0
        self._storages = WeakIdKeyDictionary()

    def _release(self, nbytes: int, _ref) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if id(storage) in inputs or storage in self._storages or not storage.nbytes():
                continue
            nbytes = -(-storage.nbytes() // self.block) * self.block
            self._storages[storage] = weakref.ref(storage, lambda ref, n=nbytes: self._release(n, ref))
            self.live += nbytes
        self.peak = max(self.peak, self.live)
        return out


def new_fake_mode(symbolic_scalars: bool = False):
    """Fake tensors on the CPU. ``symbolic_scalars``: a tensor read as a Python number (the sampler's noise
    levels) becomes a symbol instead of an error."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: PLC0415
    from torch.fx.experimental.symbolic_shapes import ShapeEnv  # noqa: PLC0415

    shape_env = ShapeEnv() if symbolic_scalars else None
    return FakeTensorMode(allow_non_fake_inputs=True, shape_env=shape_env, static_shapes=True)


@contextlib.contextmanager
def faking(mode):
    """Enter the fake ``mode``. ``mot._plus_one`` caches a tensor per device: a fake one must not outlive the
    trace, nor a real one enter it, so its cache is emptied on both sides."""
    mot._plus_one.cache_clear()
    try:
        with mode:
            yield mode
    finally:
        mot._plus_one.cache_clear()


def to_fake(module: nn.Module, mode, dtype_of: Callable[[torch.Tensor], torch.dtype]) -> None:
    """Replace every parameter by a fake one in ``dtype_of(param)`` (keeping ``requires_grad``; a parameter
    shared by several modules, as umT5's tied embedding, stays one), every buffer by its fake twin. Must run
    inside ``mode``."""
    fakes: dict[int, nn.Parameter] = {}
    for sub in module.modules():
        for name, param in sub._parameters.items():
            if param is not None:
                if id(param) not in fakes:
                    fake = torch.empty(param.shape, dtype=dtype_of(param))
                    fakes[id(param)] = nn.Parameter(fake, requires_grad=param.requires_grad)
                sub._parameters[name] = fakes[id(param)]
        for name, buffer in sub._buffers.items():
            if buffer is not None:
                fake = torch.empty(buffer.shape, dtype=buffer.dtype) if buffer.is_meta else mode.from_tensor(buffer)
                sub._buffers[name] = fake


def autocast(config: FastWAMConfig, device_type: str):
    """The trainer's and the policy's mixed precision: autocast to the compute dtype unless that is fp32."""
    dtype = config.torch_dtype
    return torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32)
