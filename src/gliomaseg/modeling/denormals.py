"""Denormal weights flushed to zero: the same model, at full speed on x86 CPUs.

Adam leaves some weights of a trained model (and BatchNorm folding some of the exported ones) below float32's
smallest normal number, about 1.2e-38. Each is zero to any precision that matters, but x86 CPUs run arithmetic on
denormal operands through slow microcode: the full-decoder model shipped in session 9 held 1579 such weights among
5.2 million, and ONNX Runtime's fp32 path ran it at 22.8 slices/s as stored against 27.2 with them zero, with identical outputs (max abs
logit difference 0.0; alternating rounds, benchmarks/denormals.py). Runs taken before and after the flush (not
alternated, so the machine's drift is in them) showed larger gains for the cross-validation's trained models
(docs/benchmarks.md). Random initial weights have none, which is why benchmarks
on random weights had not shown it. Both backends flush them when they load a model,
and ``export`` writes none.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32; nonzero values below it are denormal


def flush_array(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values`` with its denormal entries set to zero (the same array when it has none) and how many there were."""
    if values.dtype not in (np.float32, np.float64):
        return values, 0
    denormal = (values != 0) & (np.abs(values) < FLOAT32_TINY)
    count = int(denormal.sum())
    return (np.where(denormal, values.dtype.type(0), values) if count else values), count


def flush_state(state: Mapping[str, Any]) -> int:
    """Set the denormal entries of a torch state dict's floating-point tensors to zero, in place; how many there were."""
    import torch

    count = 0
    for tensor in state.values():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
            denormal = (tensor != 0) & (tensor.abs() < FLOAT32_TINY)
            n = int(denormal.sum())
            if n:
                tensor.masked_fill_(denormal, 0)
                count += n
    return count


def flush_onnx(model) -> int:
    """Set the denormal entries of an ``onnx.ModelProto``'s float initializers to zero, in place; how many there were."""
    from onnx import numpy_helper

    count = 0
    for initializer in model.graph.initializer:
        values, n = flush_array(numpy_helper.to_array(initializer))
        if n:
            initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
            count += n
    return count
