"""Shared fixtures and tolerances for the nnfast test suite.

The data are the original tutorial's ("a neural network in 11 lines of Python"): four
samples of three binary inputs, the last always 1, with two target columns
(y2: the first input copied; y3: XOR of the first two inputs).

Which file holds what (one home per subject; add a line for a new file):

- test_build.py: the kernel modules are compiled extensions.
- test_cli.py: ``python -m nnfast`` and its bench command.
- test_dask.py: ``nnfast.dask`` (distributed training against local fits, its faults and
  inputs, model search on a Dask cluster).
- test_fit.py: the fused kernel fit (cython) against the NumPy reference (numpy).
- test_hostile.py: hostile shapes, sizes and values.
- test_interrupt.py: Ctrl-C during a fit.
- test_kernels.py: each ``def`` kernel against its counterpart in ``nnfast.reference``.
- test_memory.py: a fit allocates once, up front.
- test_persistence.py: save / load (format versions 1 and 2), pickle, deepcopy.
- test_properties.py: property-based kernel / reference equivalence (hypothesis).
- test_readme.py: the README's commands and examples.
- test_reference_sklearn.py: ``nnfast.reference``'s model families (activations, outputs,
  losses, alpha, sample weights, SGD / Nesterov / Adam, schedules) against the installed
  scikit-learn's MLP, and the general path with the original's options against the original.
- test_sklearn.py: the scikit-learn estimators of ``nnfast.sklearn``.
- test_threads.py: concurrent fits from Python threads.
- test_training_options.py: fit's options (mini-batches, bias, reporting, callbacks, progress,
  sample weights, resume, report_every), gradient(), loss_gradient(), the model options
  through ``Network``.
- test_validation.py: every validation rule of the public API, no side effects on bad input.
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

# The model families of Network / nnfast.reference (names as nnfast._plan defines them).
HIDDEN_ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]
OUTPUTS = ["original", "identity", "logistic", "softmax", "exp"]


def optimizer_cases():
    """{case id: (scikit-learn MLP keyword arguments, the nnfast optimizer doing the same)}:
    each optimizer and schedule scikit-learn's stochastic solvers have."""
    from nnfast.optimizers import SGD, Adam

    return {
        "sgd": ({"solver": "sgd", "learning_rate_init": 0.05, "momentum": 0.0},
                SGD(learning_rate=0.05, momentum=0.0)),
        "sgd_momentum": ({"solver": "sgd", "learning_rate_init": 0.05, "momentum": 0.9,
                          "nesterovs_momentum": False},
                         SGD(learning_rate=0.05, momentum=0.9, nesterov=False)),
        "sgd_nesterov": ({"solver": "sgd", "learning_rate_init": 0.05, "momentum": 0.8,
                          "nesterovs_momentum": True},
                         SGD(learning_rate=0.05, momentum=0.8, nesterov=True)),
        "sgd_invscaling": ({"solver": "sgd", "learning_rate_init": 0.1, "momentum": 0.5,
                            "learning_rate": "invscaling", "power_t": 0.3},
                           SGD(learning_rate=0.1, momentum=0.5, schedule="invscaling",
                               power_t=0.3)),
        "adam": ({"solver": "adam", "learning_rate_init": 0.01, "beta_1": 0.8,
                  "beta_2": 0.99, "epsilon": 1e-7},
                 Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-7)),
    }


OPTIMIZER_CASES = list(optimizer_cases())


def general_backends():
    """Backends that run Network's general path (every model but the original's): the NumPy
    reference, and the compiled kernel once ``nnfast._compiled`` exists in this tree."""
    import importlib.util

    return ["numpy"] + (["cython"] if importlib.util.find_spec("nnfast._compiled") else [])


GENERAL_BACKENDS = general_backends()

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
