"""The action sampler's whole Euler loop replayed as one CUDA graph.

At robot batch sizes the cached action loop is a few hundred small kernels per chunk (10 steps x every action
layer), so on a GPU its latency is mostly kernel launches, not arithmetic. Its shapes are fixed for a given batch
size and chunk, so the loop is captured once into a ``torch.cuda.CUDAGraph`` and each later chunk copies its
inputs (the initial noise, the step modulations, the RoPE table and the prefilled video cache) into the graph's
static buffers and replays it: one launch per chunk.

``StaticLoop`` keeps one captured graph per input signature (shapes, dtypes and a caller key such as the number
of steps). With ``capture=False`` it runs the same static-buffer plumbing without a graph: that path is what the
CPU tests check against the eager loop, so only ``torch.cuda.graph`` itself is left to the GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

LoopFn = Callable[[Sequence[torch.Tensor]], torch.Tensor]


@dataclass
class _Captured:
    inputs: list[torch.Tensor]  # static input buffers, read by the graph
    graph: torch.cuda.CUDAGraph | None
    output: torch.Tensor | None  # the graph's static output buffer, written by each replay


class StaticLoop:
    """Replays ``fn`` over static input buffers, one CUDA graph per input signature.

    Calls are serialised by a lock: the static buffers are shared, and ``predict_action_chunk`` may be called from
    a robot loop and an inference thread.
    """

    def __init__(self, capture: bool = True, warmup_runs: int = 2):
        self.capture = capture
        self.warmup_runs = warmup_runs  # eager runs on a side stream before capture (compiles, cuBLAS handles)
        self._captured: dict[Hashable, _Captured] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._captured)

    def __call__(self, fn: LoopFn, inputs: Sequence[torch.Tensor], key: Hashable = None) -> torch.Tensor:
        signature = (key, tuple((t.shape, t.dtype, t.device) for t in inputs))
        with self._lock:
            entry = self._captured.get(signature)
            if entry is None:
                entry = self._captured[signature] = self._build(fn, inputs)
            else:
                for static, value in zip(entry.inputs, inputs, strict=True):
                    static.copy_(value)
            if entry.graph is None:
                return fn(entry.inputs)
            entry.graph.replay()  # (capture records the kernels without running them)
            return entry.output.clone()

    def _build(self, fn: LoopFn, inputs: Sequence[torch.Tensor]) -> _Captured:
        static = [t.clone() for t in inputs]
        if not self.capture:
            return _Captured(static, None, None)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_runs):
                fn(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Autocast's weight-cast cache must not hold tensors allocated inside the graph's memory pool.
        dtype = torch.get_autocast_dtype("cuda")
        with torch.autocast("cuda", dtype=dtype, enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False):
            with torch.cuda.graph(graph):
                output = fn(static)
        return _Captured(static, graph, output)
