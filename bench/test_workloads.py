"""NumPy original vs nnfast (vs PyTorch when importable) on the fixed workload matrix.

Each benchmark trains from the same initial weights for the workload's full iteration count;
grouped by workload (``--benchmark-group-by=param:workload``) the implementations sit side by
side. Divide a row's median by the workload's iterations for microseconds per iteration, or
use ``python -m nnfast bench``, which prints that table directly.
"""

import numpy as np
import pytest

from nnfast.cli import bench
from nnfast.cli.bench.workloads import WORKLOADS

IMPLEMENTATIONS = {"numpy": bench._numpy_original, "nnfast": bench._nnfast}
if bench._torch_available():
    IMPLEMENTATIONS["torch"] = bench._torch


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_fit(benchmark, workload, dtype, implementation):
    function = IMPLEMENTATIONS[implementation]
    benchmark.extra_info["iterations"] = WORKLOADS[workload].iterations
    benchmark.pedantic(function, args=(WORKLOADS[workload], np.dtype(dtype), None),
                       rounds=3, iterations=1, warmup_rounds=1)
