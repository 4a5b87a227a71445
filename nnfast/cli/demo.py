"""``python -m nnfast``: the original tutorial's two programs, trained by both backends."""

import time

import numpy as np

from .. import reference
from .._kernels import kernels
from ..network import Network
from .bench.workloads import TUTORIAL2_Y, TUTORIAL3_Y, TUTORIAL_X

PROGRAMS = (
    ("2-layer network [3, 1], 10,000 iterations", (3, 1), 10_000, TUTORIAL2_Y),
    ("3-layer network [3, 4, 1], 60,000 iterations", (3, 4, 1), 60_000, TUTORIAL3_Y),
)


def _timed_fit(sizes, backend, X, y, iterations, repeats=3):
    """The trained network and the fastest of ``repeats`` fits (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        net = Network(sizes, seed=1, backend=backend)
        start = time.perf_counter()
        net.fit(X, y, iterations)
        best = min(best, time.perf_counter() - start)
    return net, best


def _original_loop_time(sizes, X, y, iterations, repeats=3):
    """The fastest of ``repeats`` runs of the original NumPy loop alone (seconds): no
    validation, no error tracking, as the tutorial runs it."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    best = float("inf")
    for _ in range(repeats):
        weights, _ = reference.init_params(sizes, 1)
        start = time.perf_counter()
        reference.fit(weights, None, X, y, iterations, track_errors=False)
        best = min(best, time.perf_counter() - start)
    return best


def main():
    print(f"nnfast: the classic NumPy network, compiled ({kernels.ISA} kernel). "
          "Seed 1, learning rate 1.0, as in the original.\n")
    worst_difference = 0.0
    for title, sizes, iterations, y in PROGRAMS:
        numpy_net, _ = _timed_fit(sizes, "numpy", TUTORIAL_X, y, iterations, repeats=1)
        cython_net, cython_time = _timed_fit(sizes, "cython", TUTORIAL_X, y, iterations)
        numpy_time = _original_loop_time(sizes, TUTORIAL_X, y, iterations)
        difference = max(float(np.abs(a - b).max())
                         for a, b in zip(numpy_net.weights, cython_net.weights))
        worst_difference = max(worst_difference, difference)
        print(title)
        print("  input     target   numpy backend   cython backend")
        for x_row, target, a, b in zip(TUTORIAL_X, y.ravel(), numpy_net.predict(TUTORIAL_X),
                                       cython_net.predict(TUTORIAL_X)):
            print(f"  {' '.join(map(str, x_row))}     {target}        {a[0]:.8f}      {b[0]:.8f}")
        print(f"  largest weight difference between the backends: {difference:.1e}")
        print(f"  time (best of 3): NumPy original loop {numpy_time * 1e3:.1f} ms, nnfast "
              f"{cython_time * 1e3:.2f} ms -> {numpy_time / cython_time:.0f}x faster\n")
    print("For medians over the full workload matrix: python -m nnfast bench")
    return 0 if worst_difference <= 1e-9 else 1
