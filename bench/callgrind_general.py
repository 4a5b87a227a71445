"""Instruction counts of the general path's training loop, per epoch, under callgrind.

Wall time on a shared machine is noise; callgrind's instruction count (Ir) is deterministic.
This script trains one of the workloads below on a bare ``Network`` (the kernel's
``fit`` loop, one thread); run it under callgrind with collection limited to the
loop, and divide the total Ir by the epochs (fuse_1 is float64, fuse_0 float32; the loop itself is
inlined into the entry point)::

    OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect='__pyx_fuse_1__pyx_pw_*fit' --callgrind-out-file=out.%p \\
        python bench/callgrind_general.py iris-relu 200
    callgrind_annotate out.<pid> | head -30

valgrind emulates no AVX-512, so the kernel dispatch picks the avx2 build under it (and
OpenBLAS its Haswell kernels); ``NNFAST_KERNEL=baseline`` measures the SSE2 build, and
``NNFAST_SKINNY_DIM=0`` sends every product to BLAS (the general path before its skinny loops). Without
valgrind the script prints rough wall time per epoch (meaningful only on a quiet machine).
"""

import os
import sys
import tempfile
import time

import numpy as np

import nnfast
from nnfast.optimizers import SGD, Adam
from nnfast.cli.bench.workloads import MLP_WORKLOADS

# name: (MLP workload whose data it uses, hidden activation, solver, batch size)
CASES = {
    "iris-relu": ("iris-adam", "relu", "adam", 150),
    "iris-logistic": ("iris-adam", "logistic", "adam", 150),
    "iris-tanh": ("iris-adam", "tanh", "adam", 150),
    "iris-relu-sgd": ("iris-adam", "relu", "sgd", 150),
    "digits-adam": ("digits-adam", "relu", "adam", 200),
    "digits-sgd": ("digits-sgd", "relu", "sgd", 200),
    "20000x40-adam": ("20000x40-adam", "relu", "adam", 200),
}


def _data(workload, dtype):
    """The workload's data, cached in the temporary directory: importing scikit-learn for its
    datasets takes longer under valgrind than the measured epochs."""
    path = os.path.join(tempfile.gettempdir(), f"nnfast-callgrind-{workload}.npz")
    if not os.path.exists(path):
        X, labels = MLP_WORKLOADS[workload].data(np.float64)
        np.savez(path, X=X, labels=labels)
    data = np.load(path)
    return np.ascontiguousarray(data["X"], dtype=dtype), data["labels"]


def network(case, dtype):
    """The case's model (relu/logistic/tanh (100,), softmax, L2 1e-4), and its data."""
    workload, activation, solver, batch_size = CASES[case]
    X, labels = _data(workload, dtype)
    classes = np.unique(labels)
    Y = (labels[:, None] == classes[None, :]).astype(X.dtype)
    optimizer = Adam(learning_rate=1e-3) if solver == "adam" else SGD(learning_rate=1e-3)
    net = nnfast.Network([X.shape[1], 100, len(classes)], dtype=X.dtype, bias=True,
                         activation=activation, output="softmax", optimizer=optimizer,
                         alpha=1e-4, n_threads=1)
    return net, X, Y, batch_size


def main(argv):
    if "NNFAST_SKINNY_DIM" in os.environ:
        # 0 sends every product to BLAS, as before the skinny loops (for before/after counts).
        nnfast._kernels.kernels.set_skinny_dim(int(os.environ["NNFAST_SKINNY_DIM"]))
    case = argv[1]
    epochs = int(argv[2]) if len(argv) > 2 else 200
    dtype = np.dtype(argv[3]) if len(argv) > 3 else np.dtype(np.float64)
    net, X, Y, batch_size = network(case, dtype)
    start = time.perf_counter()
    net.fit(X, Y, iterations=epochs, batch_size=batch_size, shuffle=True)
    elapsed = time.perf_counter() - start
    print(f"{case} {dtype}: {epochs} epochs, {elapsed / epochs * 1e6:.1f} us/epoch "
          f"(wall, includes per-fit setup), kernel {nnfast._kernels.kernels.ISA}")


if __name__ == "__main__":
    main(sys.argv)
