"""Sparse inputs: scipy's CSR and CSC matrices (and the ``*_array`` forms) as X.

Text and one-hot data have a few non-zeros per row among thousands of columns. nnfast never
densifies them: the compiled kernel computes the first layer from the rows' non-zeros
(``nnfast._kernels``, "Sparse inputs"), the NumPy reference through scipy's products. This
module is the edge where sparse X is checked and brought, once per call, to the one form the
kernel reads: a canonical CSR matrix (sorted indices, no duplicates) of the network's dtype,
finite, with int32 or int64 indices (scipy's own choice, kept). The caller's matrix is never
changed: whatever needs converting or canonicalising is a copy.
"""

import numpy as np
import scipy.sparse as sp

from .._validation import MAX_DIMENSION, check_input_width

__all__ = ["is_sparse", "as_csr", "check_sparse_inputs"]


def is_sparse(X):
    """Whether X is a scipy sparse matrix or array."""
    return sp.issparse(X)


def as_csr(X, name, dtype):
    """A sparse X as a canonical, finite CSR matrix of dtype (see the module notes).

    Any scipy sparse format is accepted (CSC and the others are converted); the result is
    ``csr_matrix`` or ``csr_array`` as X was a matrix or an array, and shares X's arrays
    when nothing needed to change.

    Raises
    ------
    TypeError
        Values that are not integers or floats (booleans, complex, objects).
    ValueError
        Not 2-D, no rows or no columns, non-finite values, values too large for dtype, or a
        broken index structure.
    """
    dtype = np.dtype(dtype)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {X.shape}")
    if X.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integers or floats, got a sparse matrix of "
                        f"dtype {X.dtype}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column, got shape "
                         f"{X.shape}")
    for axis, length in enumerate(X.shape):
        if length > MAX_DIMENSION:
            raise ValueError(f"{name} has {length} entries along axis {axis}, more than the "
                             f"supported {MAX_DIMENSION}")
    if X.format in ("csr", "csc"):
        # A broken structure (indices out of range, row starts not monotone) would make
        # scipy's own conversions read out of bounds: checked first, in O(nnz), on a new
        # matrix object over the same arrays (scipy's check may replace its arrays).
        try:
            X = type(X)((X.data, X.indices, X.indptr), shape=X.shape)
            X.check_format(full_check=True)
        except ValueError as exc:
            raise ValueError(f"{name} is not a valid {X.format.upper()} matrix: "
                             f"{exc}") from None
    if X.format != "csr":
        X = X.tocsr()  # a new matrix
    if X.dtype != dtype:
        with np.errstate(over="ignore"):
            data = X.data.astype(dtype)
        if not np.isfinite(data).all():
            if X.dtype.kind == "f" and not np.isfinite(X.data).all():
                raise ValueError(f"{name} contains NaN or infinite values")
            raise ValueError(f"{name} has values too large for {dtype}")
        X = type(X)((data, X.indices, X.indptr), shape=X.shape)
    elif not np.isfinite(X.data).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if not X.has_canonical_format:
        X = X.copy()  # never the caller's matrix
        X.sum_duplicates()  # sorts the indices too
    if X.indices.dtype != X.indptr.dtype or X.indptr.dtype not in (np.int32, np.int64):
        X = type(X)((X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)),
                    shape=X.shape)
    return X


def check_sparse_inputs(X, sizes, dtype):
    """A sparse X for a network of these sizes: (n_rows, sizes[0]), as ``as_csr`` makes it."""
    return check_input_width(as_csr(X, "X", dtype), sizes)
