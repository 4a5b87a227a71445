"""scikit-learn's MLPClassifier against nnfast on issue 9's MLP workloads
(``nnfast.cli.bench.workloads.MLP_WORKLOADS``): whole fits of ``max_iter`` epochs, no early stop.

Implementations: scikit-learn's estimator; nnfast's ``nnfast.sklearn.MLPClassifier`` (what a
user of the estimator gets); the same model on a bare ``Network`` (the kernel alone, drawing
its own row orders), which shows what the estimator adds; and the same model and optimizer in
PyTorch when it is importable. Grouped by workload and dtype
(``python -m pytest bench/test_mlp.py --benchmark-group-by=param:workload,param:dtype``) the
implementations sit side by side; ``python -m nnfast bench --workload <name>`` prints the
comparison as a table.
"""

import numpy as np
import pytest

from nnfast.cli.bench import mlp as bench_mlp
from nnfast.cli.bench.workloads import MLP_WORKLOADS

pytest.importorskip("sklearn")


def _network(workload, dtype, n_threads, max_iter):
    """The estimator's model on a bare Network: relu (100,), softmax, L2 1e-4, batch
    min(200, rows), shuffled by the network; None for lbfgs (no Network loop to time)."""
    if workload.solver == "lbfgs":
        return None
    import nnfast
    from nnfast.optimizers import SGD, Adam

    X, y = workload.data(dtype)
    classes = np.unique(y)
    Y = (y[:, None] == classes[None, :]).astype(X.dtype)
    optimizer = Adam(learning_rate=1e-3) if workload.solver == "adam" else SGD(learning_rate=1e-3)
    net = nnfast.Network([X.shape[1], 100, len(classes)], dtype=X.dtype, bias=True,
                         activation="relu", output="softmax", optimizer=optimizer, alpha=1e-4,
                         n_threads=n_threads)
    net.fit(X, Y, iterations=max_iter, batch_size=min(200, X.shape[0]), shuffle=True)
    return net


class _Loaded:
    """A workload whose data are made once, outside the timed calls: reading scikit-learn's
    bundled iris and digits files costs more than a whole iris fit. The fits only read the
    arrays."""

    def __init__(self, workload, dtype):
        self._workload = workload
        self._dtype = np.dtype(dtype)
        self._data = workload.data(self._dtype)

    def data(self, dtype=np.float64):
        assert np.dtype(dtype) == self._dtype
        return self._data

    def __getattr__(self, name):
        return getattr(self._workload, name)


IMPLEMENTATIONS = {"sklearn": bench_mlp._sklearn, "nnfast-sklearn": bench_mlp._nnfast,
                   "nnfast-network": _network}
if bench_mlp._torch_available():
    IMPLEMENTATIONS["torch"] = bench_mlp._torch


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("workload", list(MLP_WORKLOADS))
def test_mlp_fit(benchmark, workload, dtype, implementation):
    w = MLP_WORKLOADS[workload]
    if implementation in ("torch", "nnfast-network") and w.solver == "lbfgs":
        pytest.skip("no like-for-like lbfgs row: PyTorch's L-BFGS is a different algorithm, "
                    "and a bare Network has no L-BFGS loop")
    benchmark.extra_info["epochs"] = w.max_iter
    benchmark.pedantic(IMPLEMENTATIONS[implementation],
                       args=(_Loaded(w, dtype), np.dtype(dtype), None, w.max_iter),
                       rounds=3, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("implementation", ["sklearn", "nnfast-sklearn"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mlp_fixed_cost(benchmark, dtype, implementation):
    """One-epoch fits of iris-adam: nearly all of it is the cost every fit pays whatever its
    length (input checks, initial weights, set-up, one kernel call), which is most of a
    small fit. Many rounds: each is well under a millisecond for nnfast."""
    w = MLP_WORKLOADS["iris-adam"]
    benchmark.extra_info["epochs"] = 1
    benchmark.pedantic(IMPLEMENTATIONS[implementation],
                       args=(_Loaded(w, dtype), np.dtype(dtype), None, 1),
                       rounds=200, iterations=1, warmup_rounds=20)
