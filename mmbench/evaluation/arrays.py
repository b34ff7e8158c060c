"""Reading metric inputs: array-likes and torch tensors as numpy arrays, with one clear
:class:`~mmbench.core.errors.DataError` naming the argument when they cannot be read."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmbench.core.errors import DataError

__all__ = ["as_1d", "divide", "to_numpy"]


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A numpy view/copy of an array-like or a torch tensor (moved to the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists and other unreadable inputs
        raise DataError(f"{name}: cannot be read as an array ({exc})") from None
    return arr


def as_1d(x: Any, name: str) -> np.ndarray:
    """A non-empty 1-D array (an (n, 1) column is flattened)."""
    arr = to_numpy(x, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise DataError(f"{name}: is empty")
    return arr


def divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise in float64, 0.0 where den == 0 (scikit-learn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out
