"""Training data for ``nnfast.dask.fit``: checked, split into row shards and put on workers once.

Two sources, two ways onto the cluster:

* NumPy arrays (or anything ``np.asarray`` takes) are checked on the client exactly as
  ``Network.fit`` checks them, split into one shard per worker thread, and scattered. The
  scheduler keeps no copy of scattered data, so a shard lost with its worker cannot be
  recomputed: the fit then stops with an error (and the network is left as it was).
* Dask arrays are checked on the client as far as their metadata goes (dimensions, widths,
  dtype kind, chunks that split a row), then each row chunk is converted and checked for
  non-finite values on the worker that computes it (``_dask_tasks.prepare_shard``) and the
  results are persisted. A shard lost with its worker is recomputed from its source by Dask.

Either way every shard is in worker memory before the first step, and all data errors are
raised before it.
"""

import numbers

import numpy as np

from .._validation import (
    check_inputs,
    check_sample_weight,
    check_target_range,
    check_targets,
)
from ._tasks import prepare_shard, weight_sum

# check_sample_weight's message for weights that are all zero, raised here when the chunks'
# weights are checked one by one on the workers and only their sum shows it.
ALL_ZERO_WEIGHTS = "sample_weight must not be all zero"


def is_dask_array(data):
    import dask.array as da
    return isinstance(data, da.Array)


def _check_dask_matrix(array, name, dtype):
    """Metadata checks of a dask array, in ``nnfast._validation``'s words."""
    if array.dtype == object:
        raise TypeError(f"{name} must be numeric, got an array of Python objects")
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integers or floats, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {array.shape}")
    if any(not isinstance(length, numbers.Integral) for length in array.shape):
        raise ValueError(f"{name} has unknown chunk sizes (shape {array.shape}); call "
                         f"{name}.compute_chunk_sizes() first")
    if array.shape[0] < 1:
        raise ValueError(f"{name} must have at least one row, got shape {array.shape}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {array.shape}")
    if len(array.chunks[1]) != 1:
        raise ValueError(f"{name}'s chunks split its rows: {len(array.chunks[1])} column chunks "
                         f"{array.chunks[1]}; a shard needs whole rows, rechunk with "
                         f"{name}.rechunk({{1: -1}})")


def _check_dask_weights(w, n_rows):
    """Metadata checks of dask sample weights, in ``check_sample_weight``'s words."""
    if w.dtype == object or w.dtype.kind not in "iuf":
        raise TypeError(f"sample_weight must hold integers or floats, got dtype {w.dtype}")
    if w.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D (one weight per row), got shape "
                         f"{w.shape}")
    if not isinstance(w.shape[0], numbers.Integral):
        raise ValueError(f"sample_weight has unknown chunk sizes (shape {w.shape}); call "
                         f"sample_weight.compute_chunk_sizes() first")
    if w.shape[0] != n_rows:
        raise ValueError(f"X has {n_rows} rows but sample_weight has {w.shape[0]}")


def check_dask_data(X, y, sizes, dtype, sample_weight=None):
    """(X, y, sample_weight) as dask arrays of whole rows, y 2-D and y and the weights (or
    None) chunked like X's rows; metadata only (the values are checked on the workers)."""
    import dask.array as da

    if not is_dask_array(X):  # chunked like the dask array among y and the weights
        X = check_inputs(X, sizes, dtype)
        if is_dask_array(y):
            rows = y.chunks[0]
        else:
            _check_dask_weights(sample_weight, X.shape[0])
            rows = sample_weight.chunks[0]
        X = da.from_array(X, chunks=(rows, -1))
    _check_dask_matrix(X, "X", dtype)
    if X.shape[1] != sizes[0]:
        raise ValueError(f"X has {X.shape[1]} columns but the network's input layer has "
                         f"{sizes[0]} units")
    if not is_dask_array(y):
        y = da.from_array(check_targets(y, X.shape[0], sizes, dtype), chunks=(X.chunks[0], -1))
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    _check_dask_matrix(y, "y", dtype)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if y.shape[1] != sizes[-1]:
        raise ValueError(f"y has {y.shape[1]} columns but the network's output layer has "
                         f"{sizes[-1]} units")
    if y.chunks[0] != X.chunks[0]:
        y = y.rechunk({0: X.chunks[0]})  # whole rows either way; aligns y's shards with X's
    if sample_weight is not None:
        if is_dask_array(sample_weight):
            _check_dask_weights(sample_weight, X.shape[0])
            if sample_weight.chunks[0] != X.chunks[0]:
                sample_weight = sample_weight.rechunk({0: X.chunks[0]})
        else:
            sample_weight = da.from_array(check_sample_weight(sample_weight, X.shape[0], dtype),
                                          chunks=(X.chunks[0],))
    return X, y, sample_weight


def _row_starts(chunks):
    starts, start = [], 0
    for rows in chunks:
        starts.append(start)
        start += rows
    return starts


def shards_from_dask(client, X, y, sample_weight, sizes, dtype, output):
    """Futures of the persisted, checked shards of dask arrays (X, y, sample_weight or None),
    their row counts and the total weight of all rows (their count without weights)."""
    import dask

    x_blocks = X.to_delayed().ravel()
    y_blocks = y.to_delayed().ravel()
    w_blocks = ([None] * len(x_blocks) if sample_weight is None
                else sample_weight.to_delayed().ravel())
    # pure=False: fresh keys per fit. Keys derived from the data would be shared by two fits
    # of the same array, and the first fit's release would cancel the second's shards.
    prepare = dask.delayed(prepare_shard, pure=False)
    work, rows = [], []
    for x_block, y_block, w_block, start, n_rows in zip(
            x_blocks, y_blocks, w_blocks, _row_starts(X.chunks[0]), X.chunks[0]):
        if n_rows:  # an empty chunk adds nothing to a sum; the kernel needs rows
            work.append(prepare(x_block, y_block, w_block, sizes, dtype.name, start, output))
            rows.append(n_rows)
    futures = client.compute(work)
    _raise_first_error(client, futures)
    total = float(X.shape[0])
    if sample_weight is not None:
        sums = client.gather(client.map(weight_sum, futures, pure=False))
        total = float(np.sum(sums))
        if not total > 0:
            client.cancel(futures)
            raise ValueError(ALL_ZERO_WEIGHTS)
    return futures, rows, total


def shards_from_numpy(client, X, y, sample_weight, sizes, dtype, output):
    """Futures of shards of NumPy (X, y, sample_weight or None), checked here as Network.fit
    checks, one per worker thread; their row counts and the total weight."""
    X = check_inputs(X, sizes, dtype)
    y = check_target_range(check_targets(y, X.shape[0], sizes, dtype), output)
    total = float(X.shape[0])
    if sample_weight is not None:
        sample_weight = check_sample_weight(sample_weight, X.shape[0], dtype)
        total = float(sample_weight.sum(dtype=np.float64))
    n_shards = max(1, min(X.shape[0], sum(client.nthreads().values())))
    bounds = np.linspace(0, X.shape[0], n_shards + 1).round().astype(int)
    shards = [(X[a:b], y[a:b], None if sample_weight is None else sample_weight[a:b])
              for a, b in zip(bounds[:-1], bounds[1:])]
    # hash=False: equal shards of different fits must not share a key (or be released early).
    return client.scatter(shards, hash=False), list(np.diff(bounds)), total


def _raise_first_error(client, futures):
    """Waits for every shard; raises the first failure, in row order, as the task raised it."""
    from distributed import wait

    with client.as_current():
        wait(futures)
    for future in futures:
        if future.status == "error":
            error = future.exception()  # the worker's exception, with its type and message
            client.cancel(futures)
            raise error
