"""Shared fixtures and tolerances for the nnfast test suite.

The data are the original tutorial's ("a neural network in 11 lines of Python"): four
samples of three binary inputs, the last always 1, with two target columns
(y2: the first input copied; y3: XOR of the first two inputs).

The tests mirror the package: ``kernels/`` (the compiled builds, their entry points and the
compiled runner), ``training/`` (what a fit is made of: threads, memory, Ctrl-C, sparse
input), ``sklearn/`` (the estimators against scikit-learn, its own tests, the patch),
``dask/`` and ``cli/``; at the top, the public ``Network`` (fit, options, validation, hostile
input, properties against the reference), ``reference`` against scikit-learn, persistence
and the files of earlier releases, the README and the documentation (``test_docs.py``).
"""

import contextlib
import os
import signal
import subprocess
import threading
import time

# scikit-learn's estimator checks include array-API ones that run only when SciPy's array API
# support is on; it must be set before SciPy is first imported, so before nnfast is.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

DTYPES = [np.float32, np.float64]


def _selects_torch_tests(config):
    """Whether the run's -m expression keeps tests marked ``torch`` (by default it is
    ``not torch``, from pyproject.toml)."""
    from _pytest.mark.expression import Expression

    markexpr = config.getoption("markexpr") or ""
    return not markexpr or Expression.compile(markexpr).evaluate(lambda name: name == "torch")


def pytest_ignore_collect(collection_path, config):
    """The checks against PyTorch (tests/test_reference_torch.py) import torch at the top,
    which only CI's Python 3.11 environment has: a run that deselects them does not import
    that file, and a run that selects them fails there if torch is missing."""
    if collection_path.name == "test_reference_torch.py" and not _selects_torch_tests(config):
        return True
    return None

# The model families of Network / nnfast.reference (names as nnfast._training.plan defines them).
HIDDEN_ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]  # scikit-learn's
NNFAST_ACTIVATIONS = ["leaky_relu", "elu", "gelu", "silu", "softplus"]  # beyond them
ALL_ACTIVATIONS = HIDDEN_ACTIVATIONS + NNFAST_ACTIVATIONS
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
    reference, and the compiled kernel once ``nnfast._kernels.runner`` exists in this tree."""
    import importlib.util

    return ["numpy"] + (["cython"] if importlib.util.find_spec("nnfast._kernels.runner") else [])


GENERAL_BACKENDS = general_backends()

# Tolerances for comparing a single kernel call against nnfast.reference on the same inputs.
# Both sides compute in the same dtype; they differ only in summation order (plain loops or
# BLAS against NumPy's matmul) and in exp (the kernel's polynomial against libm), i.e. by a few
# ulp of each sum. Sums of up to a few hundred terms of magnitude <= 1 are compared, so the
# absolute tolerance allows for cancellation in a sum whose terms are O(1).
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-5, np.float64: 1e-13}


# Tolerances for a few epochs of the general path (kernel against nnfast.reference's runner):
# the per-call differences above, carried through every step of a short fit and through
# Adam's division by sqrt(v) (which keeps relative errors, it does not shrink them).
GENERAL_RTOL = {np.float32: 2e-4, np.float64: 1e-10}
GENERAL_ATOL = {np.float32: 2e-5, np.float64: 1e-12}


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
    same source (e.g. a baseline and an AVX2 one, ``nnfast._kernels``), each of them, since
    ``Network`` may run any of them.
    """
    from nnfast._kernels import baseline as _kernels

    try:
        import nnfast._kernels as _dispatch
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


def kernel_blocks(network, batch_rows):
    """The blocks (the kernel's n_threads) a fit of network on batches of batch_rows rows
    cuts its products into (nnfast._training.threads.kernel_blocks)."""
    from nnfast._training import threads
    from nnfast._training.backends import backend_named

    return threads.kernel_blocks(network, backend_named(network.backend), batch_rows)


@contextlib.contextmanager
def kernel_build(kernels):
    """Runs Network's compiled backend on this build of the kernels (None: nnfast's choice):
    the original's fused path (the compiled backend object) and the general one
    (nnfast._kernels.runner)."""
    from nnfast._kernels import runner as _compiled
    from nnfast._training.backends import backend_named

    compiled = backend_named("cython")
    chosen, chosen_general = compiled.kernels, _compiled._kernels
    compiled.kernels = chosen if kernels is None else kernels
    _compiled._kernels = chosen_general if kernels is None else kernels
    try:
        yield
    finally:
        compiled.kernels = chosen
        _compiled._kernels = chosen_general


# ---------------------------------------------------------- scikit-learn's MLP (issue 9)
# Network backends the MLP estimators are checked on: the compiled one users get, and the
# NumPy reference.
MLP_BACKENDS = ["cython", "numpy"]

# Relative tolerance of an MLP fit against scikit-learn's, per dtype, on each array's scale
# (an entry near zero is held to rtol * the array's largest magnitude). float64: the two
# compute the same operations in different summation orders, ten epochs apart; float32:
# scikit-learn computes some of Adam's step in float64 and rounds once, nnfast in float32.
MLP_RTOL = {np.float32: 1e-4, np.float64: 1e-9}

# nnfast.reference's model families against scikit-learn's MLP over 10 epochs
# (test_reference_sklearn.py). float64: the same operations in the same order, apart from the
# sigmoid's formula (expit against 1 / (1 + exp(-z)), an ulp apart), grown over the epochs.
REFERENCE_SKLEARN_RTOL = {np.float64: 1e-9, np.float32: 2e-4}
REFERENCE_SKLEARN_ATOL = {np.float64: 1e-12, np.float32: 1e-5}


@pytest.fixture(params=MLP_BACKENDS)
def mlp_backend(request, monkeypatch):
    """Trains nnfast's MLP estimators on each Network backend for the test's duration."""
    from nnfast.sklearn import _mlp

    monkeypatch.setattr(_mlp, "BACKEND", request.param)
    return request.param


def assert_same_mlp(ours, theirs, rtol):
    """nnfast's fitted MLP estimator has scikit-learn's weights and records, within rtol."""
    from numpy.testing import assert_allclose

    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    pairs = list(zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_))
    assert len(pairs) == len(theirs.coefs_) * 2
    for k, (a, b) in enumerate(pairs):
        assert a.shape == b.shape
        assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=f"array {k}")
    assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)
    for name in ("loss_curve_", "validation_scores_"):
        if getattr(theirs, name, None) is not None:
            assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=rtol,
                            err_msg=name)
        else:
            assert getattr(ours, name, None) is None, name
    for name in ("best_loss_", "best_validation_score_"):
        if getattr(theirs, name, None) is not None:
            assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=rtol,
                            err_msg=name)


def child_env():
    """The environment for a child Python that must import this nnfast tree."""
    import nnfast

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(nnfast.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def read_line(process, deadline):
    """A child process's next stdout line ("" at its end), or fail at the deadline.

    The line is read by a helper thread that ends with it (select() cannot wait on a pipe on
    Windows), so nothing else reads the pipe afterwards, and communicate() gets the rest."""
    line = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()),
                              daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if reader.is_alive():
        process.kill()
        reader.join()
        pytest.fail("the child process did not answer in time")
    return line[0]


# Ctrl-C for a child process. POSIX: SIGINT. Windows has no SIGINT to send to one process:
# the child runs in its own process group (start_interruptible) and gets CTRL_BREAK_EVENT,
# which its script maps to KeyboardInterrupt, as it does SIGINT, with this prologue.
INTERRUPTIBLE_PROLOGUE = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
if hasattr(signal, "SIGBREAK"):
    signal.signal(signal.SIGBREAK, signal.default_int_handler)
"""


def start_interruptible(args, **kwargs):
    """subprocess.Popen of a child that interrupt_child can interrupt."""
    if os.name == "nt":
        kwargs["creationflags"] = (kwargs.get("creationflags", 0)
                                   | subprocess.CREATE_NEW_PROCESS_GROUP)
    return subprocess.Popen(args, **kwargs)


def interrupt_child(process):
    """Ctrl-C for a child started by start_interruptible."""
    process.send_signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGINT)
