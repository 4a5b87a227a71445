"""``nonlin``: the original's activation function, backed by the compiled kernel."""

import numpy as np

from ._kernels import kernels as _kernels
from ._validation import _as_array


def nonlin(x, deriv=False):
    """The sigmoid ``1 / (1 + exp(-x))``, or with ``deriv=True`` its derivative ``x * (1 - x)``
    computed from the sigmoid's output, as in the original.

    Numerically stable: no overflow warning for any finite input; exactly 0.0, 0.5 and 1.0 at
    -1000, 0 and 1000. NaN propagates.

    Parameters
    ----------
    x : array_like of int or float, any shape
        Pre-activations, or activations when ``deriv`` is true. Never modified.
    deriv : bool

    Returns
    -------
    ndarray or numpy scalar
        float32 for float32 input, float64 otherwise; same shape as ``x``.
    """
    array = _as_array(x, "nonlin's input")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"nonlin needs integers or floats, got dtype {array.dtype}")
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    result = np.array(array, dtype=dtype, order="C", copy=True)
    flat = result.reshape(-1)
    if flat.size:
        if deriv:
            _kernels.sigmoid_derivative(flat.copy(), flat)
        else:
            _kernels.sigmoid_inplace(flat)
    return result[()] if result.ndim == 0 else result
