"""Shared fixtures and tolerances for the nnfast test suite.

The data are the original tutorial's ("a neural network in 11 lines of Python"): four
samples of three binary inputs, the last always 1, with two target columns
(y2: the first input copied; y3: XOR of the first two inputs).

Which file holds what (one home per subject; add a line for a new file):

- test_build.py: the kernel modules are compiled extensions.
- test_cli.py: ``python -m nnfast`` and its bench command.
- test_dask.py: ``nnfast.dask`` (distributed training against local fits for every model
  option and sample weights, ``sync_every`` rounds against local shard fits, its faults and
  inputs, model search on a Dask cluster).
- test_fit.py: the fused kernel fit (cython) against the NumPy reference (numpy).
- test_general_kernel.py: the compiled general path (``nnfast._compiled`` over
  ``_kernels.fit_general`` / ``loss_gradient``) against ``nnfast.reference``'s runner for
  every activation, output, optimizer, reduction, alpha, sample weights, batching, dtype and
  kernel build; its size checks, integer codes and tanh.
- test_hostile.py: hostile shapes, sizes and values.
- test_interrupt.py: Ctrl-C during a fit.
- test_kernels.py: each ``def`` kernel of the original's path against its counterpart in
  ``nnfast.reference``, and the size checks of those entry points.
- test_memory.py: a fit allocates once, up front.
- test_mlp_input.py: the MLP estimators' fit- and predict-time input checks for plain NumPy
  arrays (``nnfast._mlp_input``, ``nnfast._random``): the same fits, predictions, classes,
  errors and warnings as scikit-learn's own validation; early stopping's decoded
  predictions, accuracy and R^2 against scikit-learn's functions; every container and
  memory order of X and y (DataFrames, Fortran order, strided, read-only, lists,
  meta-estimators' targets) against scikit-learn's fits.
- test_mlp_params.py: the MLP estimators' parameter validation (``nnfast._mlp_params``):
  ``_parameter_constraints``, exception class and message for invalid values of every
  parameter at fit / partial_fit, valid edge values, skipped validation and the fit-time
  parameter rules, all against the installed scikit-learn's; its ``check_param_validation``.
- test_persistence.py: save / load (format versions 1 and 2), pickle, deepcopy.
- test_properties.py: property-based kernel / reference equivalence (hypothesis).
- test_readme.py: the README's commands and example.
- test_docs.py: the documentation's examples (its doctest groups, the gallery's scripts), its
  build commands against CI's and the README's, and the files and sections it links.
- test_reference_sklearn.py: ``nnfast.reference``'s model families (activations, outputs,
  losses, alpha, sample weights, SGD / Nesterov / Adam, schedules) against the installed
  scikit-learn's MLP, and the general path with the original's options against the original.
- test_mlp_equivalence.py: ``nnfast.sklearn.MLPClassifier`` / ``MLPRegressor`` against the
  installed scikit-learn's (the same fits, predictions, stopping, class_weight as sample
  weights, default-parameter cross-validated scores), on both backends; scikit-learn's packed
  parameter vector (``nnfast._layout.PackedLayout``, L-BFGS's) against its ``_pack``; the
  edges against scikit-learn's outcomes (errors and warnings, divergence and non-finite
  losses, sample weights summing to zero, weights assigned by hand) and the documented
  "Differences from scikit-learn" (docs/user_guide/sklearn.rst).
- test_mlp_differential.py: the MLP estimators against scikit-learn's over random
  configurations, containers, warm starts, partial_fit sequences and bad inputs
  (``NNFAST_DIFF_CASES`` / ``NNFAST_DIFF_SEED`` / ``NNFAST_DIFF_CASE``), with the documented
  differences and today's pending ones as rules.
- test_sklearn_patch.py: ``patch_sklearn`` / ``unpatch_sklearn`` / ``is_patched`` and
  ``python -m nnfast.sklearn`` (``nnfast/sklearn/_patch.py``, ``__main__.py``).
- test_sklearn_upstream.py: scikit-learn's own ``test_mlp.py`` and ``test_common.py -k MLP``
  run against nnfast's estimators in a child pytest (plugin: sklearn_upstream_plugin.py),
  with the deselect list of tests reading scikit-learn's private internals.
- test_sklearn.py: the scikit-learn estimators of ``nnfast.sklearn``: scikit-learn's
  estimator checks for all of them, pickling and validation of the MLP estimators, the
  ``NetworkClassifier`` / ``NetworkRegressor`` behaviour.
- test_sparse.py: sparse X (CSR / CSC, matrices and arrays) in the kernel, ``Network`` and the
  MLP estimators, against scikit-learn's sparse fit, nnfast's dense fit and
  ``nnfast.reference``; bad sparse input; the memory of a large sparse fit.
- test_threads.py: concurrent fits from Python threads.
- test_training_options.py: fit's options (mini-batches, bias, reporting, callbacks, progress,
  sample weights, resume, report_every), gradient(), loss_gradient() and the full-batch
  objective L-BFGS evaluates (``Network._objective``), the model options through ``Network``.
- test_validation.py: every validation rule of the public API, no side effects on bad input.
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
    """Runs Network's compiled backend on this build of the kernels (None: nnfast's choice):
    the original's fused path (nnfast.network) and the general one (nnfast._compiled)."""
    from nnfast import _compiled, network

    chosen, chosen_general = network._kernels, _compiled._kernels
    network._kernels = chosen if kernels is None else kernels
    _compiled._kernels = chosen_general if kernels is None else kernels
    try:
        yield
    finally:
        network._kernels = chosen
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
    from nnfast import _mlp

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
