"""nnfast.sklearn.MLPClassifier vs scikit-learn's MLPClassifier (vs the same model in PyTorch
when importable) on the MLP workloads: whole fits of ``max_iter`` epochs.

Grouped by workload (``--benchmark-group-by=param:workload``) the implementations sit side
by side; ``python -m nnfast bench --workload <name>`` prints the same comparison as a table.
"""

import numpy as np
import pytest

from nnfast import bench_mlp
from nnfast.workloads import MLP_WORKLOADS

pytest.importorskip("sklearn")

IMPLEMENTATIONS = {"sklearn": bench_mlp._sklearn, "nnfast": bench_mlp._nnfast}
if bench_mlp._torch_available():
    IMPLEMENTATIONS["torch"] = bench_mlp._torch


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("workload", list(MLP_WORKLOADS))
def test_mlp_fit(benchmark, workload, dtype, implementation):
    w = MLP_WORKLOADS[workload]
    if implementation == "torch" and w.solver == "lbfgs":
        pytest.skip("PyTorch's L-BFGS is a different algorithm; no like-for-like row")
    benchmark.extra_info["epochs"] = w.max_iter
    benchmark.pedantic(IMPLEMENTATIONS[implementation],
                       args=(w, np.dtype(dtype), None, w.max_iter),
                       rounds=3, iterations=1, warmup_rounds=1)
