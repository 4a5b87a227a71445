"""The JAX peer of the bench's MLP rows (``nnfast.bench_jax``) against scikit-learn's fit.

JAX is not a dependency of nnfast or of its test suite (CI does not install it); this runs on
demand where it is installed: ``pip install jax jaxlib`` then
``python -m pytest bench/test_jax_peer.py``. tests/cli/test_cli.py checks the same model code on
NumPy without JAX.
"""

import dataclasses

import numpy as np
import pytest

from nnfast.cli.bench import jax as bench_jax
from nnfast.cli.bench.workloads import MLP_WORKLOADS

pytest.importorskip("jax")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jax_peer_compiles_once_and_makes_scikit_learns_fit(dtype):
    from sklearn.neural_network import MLPClassifier

    # 300 rows: a full batch of 200 and a partial one of 100, as the scan must handle.
    workload = dataclasses.replace(MLP_WORKLOADS["digits-sgd"], rows=300, max_iter=3)
    seconds, coefs = bench_jax.fit(workload, np.dtype(dtype), None, workload.max_iter)
    compiled = bench_jax.compile_seconds(workload, np.dtype(dtype), workload.max_iter)
    assert seconds > 0 and compiled > 0
    bench_jax.fit(workload, np.dtype(dtype), None, workload.max_iter)
    assert bench_jax.compile_seconds(workload, np.dtype(dtype), workload.max_iter) == compiled
    X, y = workload.data(dtype)
    reference = MLPClassifier(**workload.params()).fit(X, y)
    tolerance = {np.float32: 1e-6, np.float64: 1e-12}[dtype]
    for ours, theirs in zip(coefs, reference.coefs_):
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=tolerance)
