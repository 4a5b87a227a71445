"""Memory: a fit allocates once, up front, and never more than the NumPy original."""

import tracemalloc

import numpy as np
import pytest

import nnfast


def _peak_and_total_allocated(function):
    """Peak traced memory while function runs, in bytes, above what was live before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def _data(rows, n_in, n_out, seed=0):
    random_state = np.random.RandomState(seed)
    X = random_state.random_sample((rows, n_in))
    y = (random_state.random_sample((rows, n_out)) < 0.5).astype(float)
    return X, y


@pytest.mark.parametrize("batch_size", [None, 16])
def test_fit_memory_does_not_grow_with_iterations(batch_size):
    """tracemalloc sees NumPy's allocations: the kernel's buffers are allocated once per fit,
    so a fit ten times longer peaks no higher (shuffled mini-batch orders are drawn into one
    buffer of at most 2**16 entries, reused chunk after chunk)."""
    X, y = _data(256, 32, 4)

    def fit(iterations):
        net = nnfast.Network([32, 64, 4])
        return _peak_and_total_allocated(
            lambda: net.fit(X, y, iterations, 0.05, batch_size=batch_size))

    fit(1)  # warm-up: first-call caches
    short, long = fit(1000), fit(10_000)
    assert long <= short + 16 * 1024, (short, long)


def test_fit_peak_memory_is_below_the_numpy_originals():
    X, y = _data(4096, 256, 10)
    fast = nnfast.Network([256, 256, 10])
    slow = nnfast.Network([256, 256, 10], backend="numpy")
    fast.fit(X, y, 1, 0.001)  # warm-up
    fast_peak = _peak_and_total_allocated(lambda: fast.fit(X, y, 3, 0.001))
    slow_peak = _peak_and_total_allocated(lambda: slow.fit(X, y, 3, 0.001))
    assert fast_peak < slow_peak, (fast_peak, slow_peak)
