"""Shared fixtures and tolerances for the nnfast test suite.

The data are the original tutorial's ("a neural network in 11 lines of Python"): four
samples of three binary inputs, the last always 1, with two target columns
(y2: the first input copied; y3: XOR of the first two inputs).

Where the tests of a subject live (one file each): ``test_dask.py`` holds everything about
``nnfast.dask`` (distributed training against local fits, its faults and inputs, model
search on a Dask cluster).
"""

import contextlib
import os
import select
import time

# scikit-learn's estimator checks include array-API ones that run only when SciPy's array API
# support is on; it must be set before SciPy is first imported, so before nnfast is.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DTYPES = [np.float32, np.float64]

# Tolerances for comparing a single kernel call against nnfast.reference on the same inputs.
# Both sides compute in the same dtype; they differ only in summation order (plain loops or
# BLAS against NumPy's matmul) and in exp (the kernel's polynomial against libm), i.e. by a few
# ulp of each sum. Sums of up to a few hundred terms of magnitude <= 1 are compared, so the
# absolute tolerance allows for cancellation in a sum whose terms are O(1).
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-5, np.float64: 1e-13}


@pytest.fixture(params=DTYPES, ids=lambda dt: np.dtype(dt).name)
def dtype(request):
    """Each floating dtype the kernel is compiled for."""
    return request.param


@pytest.fixture
def X():
    """The original's inputs, as an int array exactly as the tutorial writes them."""
    return np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])


@pytest.fixture
def y2():
    """Targets of the tutorial's 2-layer program: the first input column."""
    return np.array([[0, 0, 1, 1]]).T


@pytest.fixture
def y3():
    """Targets of the tutorial's 3-layer program: XOR of the first two inputs."""
    return np.array([[0, 1, 1, 0]]).T


def kernel_builds():
    """Every build of the compiled kernels importable and runnable on this machine.

    ``nnfast._kernels`` always; where the package dispatches between several builds of the
    same source (e.g. a baseline and an AVX2 one, ``nnfast._dispatch``), each of them, since
    ``Network`` may run any of them.
    """
    from nnfast import _kernels

    try:
        from nnfast import _dispatch
    except ImportError:
        return [_kernels]
    builds = list(getattr(_dispatch, "available", lambda: [_kernels])())
    return builds if _kernels in builds else [_kernels] + builds


def blas_min_flops(kernels):
    """The multiply-add count from which a kernel build's matrix products go to BLAS."""
    if hasattr(kernels, "BLAS_MIN_FLOPS"):
        return kernels.BLAS_MIN_FLOPS
    return kernels.get_blas_min_flops()


def _build_id(kernels):
    return kernels.__name__.rsplit(".", 1)[-1]


@pytest.fixture(params=kernel_builds(), ids=_build_id)
def kernels(request):
    """Each build of the compiled kernels that runs here."""
    return request.param


@contextlib.contextmanager
def kernel_build(kernels):
    """Runs Network's compiled backend on this build of the kernels (None: nnfast's choice)."""
    from nnfast import network

    chosen = network._kernels
    network._kernels = chosen if kernels is None else kernels
    try:
        yield
    finally:
        network._kernels = chosen


def child_env():
    """The environment for a child Python that must import this nnfast tree."""
    import nnfast

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(nnfast.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def read_line(process, deadline):
    """A child process's next stdout line ("" at its end), or fail at the deadline."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            process.kill()
            pytest.fail("the child process did not answer in time")
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            return process.stdout.readline()
