"""The compiled general path against ``nnfast.reference``'s runner.

``nnfast._kernels.runner`` (the runner contract of ``nnfast._training.plan`` over
``_kernels.fit`` and ``_kernels.loss_gradient``) and ``nnfast.reference.make_runner`` /
``loss_gradient`` are given the same plan, data, initial parameters, optimizer state and row
orders; after a few epochs their parameters, optimizer state, counters and epoch losses must
agree to the per-dtype tolerances of conftest. The reference is the oracle: it is itself
tested against the installed scikit-learn (tests/test_reference_sklearn.py).

Every combination runs: each hidden activation (two hidden layers, so each activation is
met before another and before the output), each output, each optimizer and schedule, both
reductions, alpha zero or not, with and without sample weights, full batch, uneven
mini-batches in stored order and shuffled ones, both dtypes and every kernel build. The
shapes put some products below the BLAS threshold (plain loops) and some above it; a second
test uses larger shapes and kernel threads. The kernel runs in two chunks against the
reference's one, so the optimizer's counters must carry over between calls.

Also here: the entry points' size checks, the integer codes (one definition, the same names in
the plan, the reference and every build), and the accuracy of the general path's branch-free tanh.
"""

import itertools
import re

import numpy as np
import pytest
import scipy.sparse
from numpy.testing import assert_allclose, assert_array_equal

from nnfast import reference
from nnfast._kernels import baseline as _kernels, runner as _compiled
from nnfast._training import plan as _plan
from nnfast._training.layout import allocate_general_workspace, pack_params, param_views
from nnfast._training.plan import FitPlan, OptimizerState
from nnfast._training.sparse import as_csr
from nnfast.optimizers import SCHEDULES, SGD, Adam, GradientStep
from conftest import (ALL_ACTIVATIONS, GENERAL_ATOL, GENERAL_RTOL, OUTPUTS, kernel_build,
                      kernel_builds, optimizer_cases)

BUILDS = kernel_builds()
BUILD_IDS = [kernels.__name__.rsplit(".", 1)[-1] for kernels in BUILDS]


def _optimizers():
    """{id: nnfast optimizer}: the plain step and scikit-learn's stochastic solvers."""
    cases = {"plain": GradientStep(learning_rate=0.1)}
    cases.update({name: optimizer for name, (_, optimizer) in optimizer_cases().items()})
    return cases


OPTIMIZERS = _optimizers()
# Two hidden layers; the pairs put each activation first and second (every code path of the
# forward pass and of the derivative, from the output or kept). Three apart, so that no
# unbounded activation feeds the identity (softplus then identity diverges at these steps).
ACTIVATION_PAIRS = [(ALL_ACTIVATIONS[i], ALL_ACTIVATIONS[(i + 3) % len(ALL_ACTIVATIONS)])
                    for i in range(len(ALL_ACTIVATIONS))]
# (batch_size, shuffled): full batch, uneven mini-batches (23 = 3 * 7 + 2), shuffled ones.
BATCHINGS = {"full": (None, False), "uneven": (7, False), "shuffled": (7, True)}

SIZES = (5, 6, 4, 3)
N_ROWS = 23
N_EPOCHS = 3


def _targets(rs, output, n_rows, n_out, dtype):
    """Targets in each output's range: probabilities, one-hot rows, counts, reals."""
    if output == "original":
        y = rs.uniform(0, 1, (n_rows, n_out))
    elif output == "logistic":
        y = (rs.uniform(0, 1, (n_rows, n_out)) < 0.5).astype(float)
    elif output == "softmax":
        y = np.eye(n_out)[rs.randint(0, n_out, n_rows)]
    elif output == "exp":
        y = rs.poisson(1.5, (n_rows, n_out)).astype(float)
    else:
        y = rs.randn(n_rows, n_out)
    return np.ascontiguousarray(y, dtype=dtype)


def _problem(sizes, n_rows, output, dtype, weighted, bias=True):
    """RandomState(0) data, sample weights (or None) and scikit-learn-like initial params."""
    rs = np.random.RandomState(0)
    X = rs.randn(n_rows, sizes[0]).astype(dtype)
    y = _targets(rs, output, n_rows, sizes[-1], dtype)
    weights = rs.uniform(0.2, 2.0, n_rows).astype(dtype) if weighted else None
    coefs, intercepts = reference.init_coefs(sizes, rs, dtype=dtype)
    params = pack_params(coefs, intercepts if bias else None)
    return X, y, weights, params


def _plan_for(sizes, activations, output, optimizer, reduction, alpha, batch_size, shuffled,
              weighted, dtype, n_rows, bias=True):
    # Summed gradients are n_rows times larger, and exp's grow fast: smaller steps keep the
    # fits finite.
    scale = (1.0 if reduction == "mean" else 0.1) * (0.2 if output == "exp" else 1.0)
    return FitPlan(sizes=tuple(sizes), bias=bias, dtype=np.dtype(dtype),
                   activations=tuple(activations), output=output, reduction=reduction,
                   alpha=alpha, optimizer=optimizer,
                   learning_rate=optimizer.learning_rate * scale,
                   batch_size=n_rows if batch_size is None else batch_size,
                   shuffled=shuffled, weighted=weighted)


def _orders(shuffled, n_epochs, n_rows):
    if not shuffled:
        return None
    rs = np.random.RandomState(1)
    return np.array([rs.permutation(n_rows) for _ in range(n_epochs)], dtype=np.intp)


def _fit_reference(plan, X, y, weights, params, n_epochs, orders):
    """(params, state, losses, epochs_done, diverged) of nnfast.reference's runner."""
    state = OptimizerState.fresh(plan)
    params = params.copy()
    losses, done, diverged = reference.make_runner(plan, X, y, weights)(
        params, state, n_epochs, orders)
    return params, state, losses, done, diverged


def _fit_kernel(kernels, plan, X, y, weights, params, n_epochs, orders, n_threads=1):
    """The same from nnfast._kernels.runner on one kernel build, its epochs run in two calls."""
    state = OptimizerState.fresh(plan)
    params = params.copy()
    with kernel_build(kernels):
        run = _compiled.make_runner(plan, X, y, weights, n_threads, 0)
    first = n_epochs // 2
    losses, done, diverged = run(params, state, first, None if orders is None else orders[:first])
    if not diverged:
        more_losses, more_done, diverged = run(params, state, n_epochs - first,
                                               None if orders is None else orders[first:])
        losses = np.concatenate([losses, more_losses])
        done += more_done
    return params, state, losses, done, diverged


def _assert_same_loss_gradient(kernels, plan, params, X, y, weights, dtype, case=None):
    """The kernel's full-batch loss and gradient against the reference's."""
    expected_loss, expected_grad = reference.loss_gradient(plan, params, X, y, weights)
    with kernel_build(kernels):
        loss, grad = _compiled.loss_gradient(plan, params, X, y, weights, 1)
    assert isinstance(loss, float)
    assert grad.dtype == dtype and grad.shape == params.shape
    rtol, atol = GENERAL_RTOL[dtype], GENERAL_ATOL[dtype]
    assert_allclose(loss, expected_loss, rtol=rtol, atol=atol, err_msg=str(case))
    assert_allclose(grad, expected_grad, rtol=rtol, atol=atol, err_msg=str(case))


def _assert_same_fit(reference_result, kernel_result, dtype, case):
    ref_params, ref_state, ref_losses, ref_done, ref_diverged = reference_result
    ker_params, ker_state, ker_losses, ker_done, ker_diverged = kernel_result
    rtol, atol = GENERAL_RTOL[dtype], GENERAL_ATOL[dtype]
    assert (ker_done, ker_diverged) == (ref_done, ref_diverged), case
    assert not ref_diverged, f"the reference diverged, pick a smaller step: {case}"
    assert np.isfinite(ref_losses).all(), case
    assert_allclose(ker_losses, ref_losses, rtol=rtol, atol=atol, err_msg=f"losses {case}")
    assert_allclose(ker_params, ref_params, rtol=rtol, atol=atol, err_msg=f"params {case}")
    assert_allclose(ker_state.values, ref_state.values, rtol=rtol, atol=atol,
                    err_msg=f"state {case}")
    assert ker_state.values.dtype == ref_state.values.dtype
    assert (ker_state.step, ker_state.samples_seen) == (ref_state.step,
                                                        ref_state.samples_seen), case
    assert_allclose(ker_state.learning_rate, ref_state.learning_rate, rtol=1e-15)
    assert ker_state.epochs == ref_state.epochs, case


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("output", OUTPUTS)
def test_fit_matches_reference(dtype, output, optimizer):
    """Every activation pair x reduction x alpha x sample weights x batching x kernel build,
    for one dtype, output and optimizer (the reference runs once for all builds)."""
    for activations, reduction, alpha, weighted, batching in itertools.product(
            ACTIVATION_PAIRS, ["mean", "sum"], [0.0, 0.01], [False, True], BATCHINGS):
        batch_size, shuffled = BATCHINGS[batching]
        case = dict(activations=activations, reduction=reduction, alpha=alpha,
                    weighted=weighted, batching=batching)
        X, y, weights, params = _problem(SIZES, N_ROWS, output, dtype, weighted)
        plan = _plan_for(SIZES, activations, output, OPTIMIZERS[optimizer], reduction, alpha,
                         batch_size, shuffled, weighted, dtype, N_ROWS)
        orders = _orders(shuffled, N_EPOCHS, N_ROWS)
        expected = _fit_reference(plan, X, y, weights, params, N_EPOCHS, orders)
        # The fit moved the parameters (guards against comparing two no-ops).
        assert not np.array_equal(expected[0], params), case
        for kernels, build in zip(BUILDS, BUILD_IDS):
            result = _fit_kernel(kernels, plan, X, y, weights, params, N_EPOCHS, orders)
            _assert_same_fit(expected, result, dtype, dict(case, build=build))


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_fit_matches_reference_blas_and_threads(kernels, dtype, activation, n_threads):
    """Shapes whose products all go to BLAS, with and without kernel threads (n_threads=3:
    the team step, each batch in three row blocks whatever the team's size, partial batches
    included)."""
    sizes, n_rows = (20, 33, 17, 4), 61
    for output, optimizer, bias in [("softmax", "adam", True), ("identity", "sgd_nesterov", True),
                                    ("original", "plain", False), ("exp", "sgd", True)]:
        X, y, weights, params = _problem(sizes, n_rows, output, dtype, True, bias=bias)
        plan = _plan_for(sizes, (activation, activation), output, OPTIMIZERS[optimizer], "mean",
                         1e-3, 25, True, True, dtype, n_rows, bias=bias)
        orders = _orders(True, N_EPOCHS, n_rows)
        _assert_same_fit(_fit_reference(plan, X, y, weights, params, N_EPOCHS, orders),
                         _fit_kernel(kernels, plan, X, y, weights, params, N_EPOCHS, orders,
                                     n_threads),
                         dtype, (output, optimizer, bias))


# Layers with a short side (at most get_skinny_dim() units) run as the skinny loops rather
# than BLAS; these widths exercise each of them: a short input (4 -> 37: blocks of a row,
# whole vectors and a scalar tail in every build's vector width), a short output (40 -> 3,
# 70 -> 2: dot products, the transposed hidden delta and gradient), a short layer between
# wide ones (30 -> 9 -> 40: dot products of the hidden delta without a transpose) and one
# layer left to BLAS (37 -> 70).
SKINNY_SIZES = [(30, 9, 40, 3), (4, 37, 70, 2)]


# How the products of SKINNY_SIZES' layers run: "skinny", a short side as loops and the rest
# through BLAS; "blas", every product through BLAS; "loops", every layer as loops (the loop
# units nnfast._kernels.blas_kernels sets beside a BLAS without AVX-512 kernels).
PRODUCT_ROUTES = {"skinny": (None, 0), "blas": (0, 0), "loops": (None, 128)}


@pytest.mark.parametrize("route", list(PRODUCT_ROUTES))
@pytest.mark.parametrize("sizes", SKINNY_SIZES, ids=str)
@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_fit_matches_reference_skinny_layers(kernels, dtype, sizes, route):
    """Layers with a short side, through the skinny loops, through BLAS (skinny_dim 0), and
    every layer as loops (loop units above every width)."""
    n_rows = 45
    saved = kernels.get_skinny_dim(), kernels.get_loop_units()
    skinny_dim, loop_units = PRODUCT_ROUTES[route]
    kernels.set_skinny_dim(saved[0] if skinny_dim is None else skinny_dim)
    kernels.set_loop_units(loop_units)
    try:
        for activations, output, optimizer in [(("relu", "tanh"), "softmax", "adam"),
                                               (("logistic", "identity"), "identity", "sgd"),
                                               (("gelu", "leaky_relu"), "logistic", "adam"),
                                               (("silu", "elu"), "identity", "sgd"),
                                               (("softplus", "gelu"), "softmax", "sgd")]:
            X, y, weights, params = _problem(sizes, n_rows, output, dtype, True)
            plan = _plan_for(sizes, activations, output, OPTIMIZERS[optimizer], "mean", 1e-3,
                             19, True, True, dtype, n_rows)
            orders = _orders(True, N_EPOCHS, n_rows)
            _assert_same_fit(_fit_reference(plan, X, y, weights, params, N_EPOCHS, orders),
                             _fit_kernel(kernels, plan, X, y, weights, params, N_EPOCHS,
                                         orders),
                             dtype, (activations, output, optimizer))
    finally:
        kernels.set_skinny_dim(saved[0])
        kernels.set_loop_units(saved[1])


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_loss_gradient_matches_reference_skinny_layers(kernels, dtype, output):
    """The full-batch gradient through the skinny loops (its transposes land in grad_out)."""
    sizes, n_rows = SKINNY_SIZES[0], 45
    X, y, weights, params = _problem(sizes, n_rows, output, dtype, False)
    plan = _plan_for(sizes, ("tanh", "relu"), output, OPTIMIZERS["adam"], "mean", 1e-3, None,
                     False, False, dtype, n_rows)
    _assert_same_loss_gradient(kernels, plan, params, X, y, None, dtype)


# Networks whose every layer has a short side step in blocks of rows (_blocked_step): a few
# rows per block for wide layers, so that these batches span many blocks and end in a short
# one; with and without biases, weights, every output.
ROW_BLOCK_SIZES = [(4, 100, 3), (6, 40, 12, 40, 1)]


@pytest.mark.parametrize("sizes", ROW_BLOCK_SIZES, ids=str)
@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_row_blocks_match_reference(kernels, dtype, sizes):
    n_rows = 150
    cases = [("softmax", ("relu",) * 3, "adam", None, False, True),
             ("original", ("logistic",) * 3, "plain", 37, True, True),
             ("identity", ("tanh",) * 3, "sgd", 61, True, False),
             ("logistic", ("identity",) * 3, "adam", None, True, True),
             # The slopes the forward pass keeps, in blocks of rows.
             ("softmax", ("gelu", "silu", "gelu"), "adam", 37, True, True),
             ("identity", ("elu", "softplus", "leaky_relu"), "sgd", None, False, True)]
    for output, activations, optimizer, batch, weighted, bias in cases:
        activations = activations[:len(sizes) - 2]
        X, y, weights, params = _problem(sizes, n_rows, output, dtype, weighted, bias=bias)
        plan = _plan_for(sizes, activations, output, OPTIMIZERS[optimizer], "mean", 1e-3,
                         batch, False, weighted, dtype, n_rows, bias=bias)
        _assert_same_fit(_fit_reference(plan, X, y, weights, params, N_EPOCHS, None),
                         _fit_kernel(kernels, plan, X, y, weights, params, N_EPOCHS, None),
                         dtype, (output, optimizer, batch, bias))
        _assert_same_loss_gradient(kernels, plan, params, X, y, weights, dtype)


@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_divergence_stops_at_the_epoch_it_happens(kernels, dtype):
    sizes, n_rows = (5, 6, 1), 23
    X, y, _, params = _problem(sizes, n_rows, "identity", dtype, False)
    plan = _plan_for(sizes, ("identity",), "identity", GradientStep(learning_rate=1e5), "sum",
                     0.0, None, False, False, dtype, n_rows)
    _, ref_state, ref_losses, ref_done, ref_diverged = _fit_reference(plan, X, y, None,
                                                                       params, 50, None)
    _, state, losses, done, diverged = _fit_kernel(kernels, plan, X, y, None, params, 50, None)
    assert state.samples_seen == ref_state.samples_seen
    assert ref_diverged and diverged
    assert done == ref_done
    assert not np.isfinite(losses[done])
    assert np.isfinite(losses[:done]).all()
    assert_allclose(losses[:done], ref_losses[:done], rtol=GENERAL_RTOL[dtype])


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_loss_gradient_matches_reference(kernels, dtype, output):
    for activations, reduction, alpha, weighted, bias in itertools.product(
            ACTIVATION_PAIRS, ["mean", "sum"], [0.0, 0.01], [False, True], [True, False]):
        case = dict(activations=activations, reduction=reduction, alpha=alpha,
                    weighted=weighted, bias=bias)
        X, y, weights, params = _problem(SIZES, N_ROWS, output, dtype, weighted, bias=bias)
        plan = _plan_for(SIZES, activations, output, GradientStep(), reduction, alpha, None,
                         False, weighted, dtype, N_ROWS, bias=bias)
        before = params.copy()
        _assert_same_loss_gradient(kernels, plan, params, X, y, weights, dtype, case)
        assert_array_equal(params, before)


def test_codes_are_defined_once_and_named_alike_everywhere():
    """The codes have one definition (nnfast/_kernels/codes.pxd, cimported by every build and
    exported as the enums of nnfast._kernels.codes). The plan's names are read from it, in
    code order; name for name the NumPy reference implements what the kernel implements; and
    this suite's own lists of names cover every code."""
    from nnfast._kernels import codes

    tables = {codes.Activation: _plan.HIDDEN_ACTIVATIONS, codes.Output: _plan.OUTPUTS,
              codes.Optimizer: _plan.OPTIMIZERS, codes.Reduction: _plan.REDUCTIONS,
              codes.Schedule: SCHEDULES, codes.Loss: ("output",) + _plan.LOSSES}
    for enum, names in tables.items():
        assert [int(code) for code in enum] == list(range(len(enum))), enum
        assert names == tuple(code.name.split("_", 1)[1].lower() for code in enum), enum
    # The reference has a function for each name, and the tests parametrize over all of them.
    assert set(_plan.HIDDEN_ACTIVATIONS) == set(reference.DERIVATIVES)
    assert set(_plan.HIDDEN_ACTIVATIONS) <= set(reference.ACTIVATIONS)
    assert set(_plan.OUTPUTS) == set(reference.OUTPUT_ACTIVATIONS) == set(reference.OUTPUT_LOSSES)
    assert (set(_plan.LOSSES) == set(reference.REGRESSION_LOSSES)
            == set(reference.REGRESSION_DERIVATIVES) == set(ROBUST_LOSSES))
    assert set(ALL_ACTIVATIONS) == set(_plan.HIDDEN_ACTIVATIONS)
    assert set(OUTPUTS) == set(_plan.OUTPUTS)
    # A plan passes each option as the code of its name.
    for name, (_, optimizer) in dict(optimizer_cases(), plain=(None, GradientStep())).items():
        plan = _plan_for((3, 4, 2), ("tanh",), "softmax", optimizer, "mean", 0.0, None, False,
                         False, np.float64, 5)
        state = OptimizerState.fresh(plan)
        reference.make_optimizer(plan, state)  # the reference knows every optimizer name
        assert plan.optimizer_code == codes.Optimizer["OPTIMIZER_" + plan.optimizer_name.upper()]
        assert plan.schedule_code == codes.Schedule[
            "SCHEDULE_" + getattr(optimizer, "schedule", "constant").upper()]
    for output, reduction in itertools.product(_plan.OUTPUTS, _plan.REDUCTIONS):
        plan = _plan_for((3, 4, 2), ("relu",), output, GradientStep(), reduction, 0.0, None,
                         False, False, np.float64, 5)
        assert plan.output_code == codes.Output["OUTPUT_" + output.upper()]
        assert plan.reduction_code == codes.Reduction["REDUCTION_" + reduction.upper()]
    for activation in _plan.HIDDEN_ACTIVATIONS:
        plan = _plan_for((3, 4, 2), (activation,), "identity", GradientStep(), "sum", 0.0,
                         None, False, False, np.float64, 5)
        assert list(plan.activation_codes) == [
            codes.Activation["ACTIVATION_" + activation.upper()]]


@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_each_build_accepts_exactly_the_defined_codes(kernels):
    """Every build's TrainConfig takes each code of each enum and refuses the next number."""
    from nnfast._kernels import codes

    fields = {"output": codes.Output, "reduction": codes.Reduction,
              "optimizer": codes.Optimizer, "schedule": codes.Schedule, "loss": codes.Loss}
    # What some codes need besides: the cosine schedule a length, a regression loss the
    # identity output and a parameter that each of them takes.
    needs = {("schedule", codes.Schedule.SCHEDULE_COSINE): dict(schedule_epochs=1)}
    needs.update({("loss", code): dict(output=int(codes.Output.OUTPUT_IDENTITY),
                                       loss_parameter=0.5) for code in codes.Loss})
    for field, enum in fields.items():
        for code in enum:
            kernels.TrainConfig(**dict(_valid_config_settings(), **{field: int(code)},
                                       **needs.get((field, code), {})))
        with pytest.raises(ValueError, match=f"{field} = {len(enum)} is not a code of "
                                             f"{enum.__name__}"):
            kernels.TrainConfig(**dict(_valid_config_settings(), **{field: len(enum)}))
    for code in codes.Activation:
        kernels.TrainConfig(**dict(_valid_config_settings(), activations=(int(code),)))
    with pytest.raises(ValueError, match=rf"activations\[0\] = {len(codes.Activation)} is not "
                                         "a code of Activation"):
        kernels.TrainConfig(**dict(_valid_config_settings(), activations=(len(codes.Activation),)))


# --------------------------------------------------------------------------------------------
# Size checks: a wrong buffer is a ValueError naming it, before the kernel runs.
# --------------------------------------------------------------------------------------------

def _general_call(kernels, dtype, optimizer="adam", shuffled=True, weighted=True):
    """Valid arguments of fit for a small model, as a dict to spoil one at a time."""
    sizes, n_rows, batch = (4, 5, 3), 9, 4
    opt = OPTIMIZERS["adam" if optimizer == "adam" else "plain"]
    plan = _plan_for(sizes, ("relu",), "softmax", opt, "mean", 0.0, batch, shuffled,
                     weighted, dtype, n_rows)
    with kernel_build(kernels):  # each build has its own TrainConfig type
        config = _compiled._config(plan, batch, 1, 0)
    X, y, weights, params = _problem(sizes, n_rows, "softmax", dtype, weighted)
    return config, dict(
        params=params, state=OptimizerState.fresh(plan), x=X, y=y,
        sample_weight=np.empty(0, dtype=dtype) if weights is None else weights,
        order=(_orders(True, 2, n_rows) if shuffled else np.empty((0, 0), dtype=np.intp)),
        workspace=allocate_general_workspace(sizes, True, batch, dtype, shuffled, weighted),
        epoch_losses=np.empty(2))


def _fit(kernels, config, args):
    return kernels.fit(config, args["params"], args["state"], args["x"], args["y"],
                       args["sample_weight"], args["order"], args["workspace"],
                       args["epoch_losses"])


def _set(key, make):
    """A change that replaces one argument by make(args)."""
    return lambda args: args.__setitem__(key, make(args))


def _set_workspace(key, length, dtype=None):
    """A change that replaces one workspace buffer by an array of that length."""
    def change(args):
        args["workspace"][key] = np.empty(length, dtype or args["params"].dtype)
    return change


# (id, change to the valid arguments of _general_call, text the ValueError must contain).
SPOILT_FIT = [
    ("params-short", _set("params", lambda a: a["params"][:-1].copy()), "params"),
    ("state-short", _set("state", lambda a: OptimizerState(a["state"].values[:-1].copy())),
     "state.values"),
    ("state-dtype", _set("state", lambda a: OptimizerState(a["state"].values.astype(
        np.float32 if a["params"].dtype == np.float64 else np.float64))), "state.values"),
    ("x-columns", _set("x", lambda a: np.ascontiguousarray(a["x"][:, :3])), "x"),
    ("y-rows", _set("y", lambda a: np.ascontiguousarray(a["y"][:-1])), "y"),
    ("y-columns", _set("y", lambda a: np.ascontiguousarray(a["y"][:, :2])), "y"),
    ("weights-short", _set("sample_weight", lambda a: a["sample_weight"][:-1]),
     "sample_weight"),
    ("order-columns", _set("order", lambda a: np.ascontiguousarray(a["order"][:, :-1])),
     "order"),
    ("order-epochs", _set("order", lambda a: np.ascontiguousarray(a["order"][:1])), "order"),
    ("order-value", lambda a: a["order"].__setitem__((1, 3), 9), "order[1, 3]"),
    ("order-negative", lambda a: a["order"].__setitem__((0, 0), -1), "order[0, 0]"),
    ("activations-short", _set_workspace("activations", 3), "workspace['activations']"),
    ("deltas-short", _set_workspace("deltas", 3), "workspace['deltas']"),
    ("bias-sums-short", _set_workspace("bias_sums", 2), "workspace['bias_sums']"),
    ("gradient-short", _set_workspace("gradient", 5), "workspace['gradient']"),
    ("transposed-short", _set_workspace("transposed", 5), "workspace['transposed']"),
    ("transposed-gradient-short", _set_workspace("transposed_gradient", 5),
     "workspace['transposed_gradient']"),
    ("batch-x-short", _set_workspace("batch_x", 3), "workspace['batch_x']"),
    ("batch-y-short", _set_workspace("batch_y", 3), "workspace['batch_y']"),
    ("batch-w-short", _set_workspace("batch_w", 3), "workspace['batch_w']"),
    ("workspace-dtype", _set_workspace("deltas", 1000, np.int64), "workspace['deltas']"),
    ("workspace-missing", lambda a: a["workspace"].pop("gradient"), "gradient"),
]


@pytest.mark.parametrize("name, spoil, message", SPOILT_FIT,
                         ids=[case[0] for case in SPOILT_FIT])
@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_fit_checks_every_buffer(kernels, dtype, name, spoil, message):
    config, args = _general_call(kernels, dtype)
    params_before = args["params"].copy()
    spoil(args)
    with pytest.raises(ValueError, match=re.escape(message)):
        _fit(kernels, config, args)
    if name != "params-short":
        assert_array_equal(args["params"], params_before)
    assert (args["state"].step, args["state"].samples_seen) == (0, 0)


@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_fit_valid_call_runs(kernels, dtype):
    """The unspoilt arguments of the size-check tests are valid (so each check is what fails)."""
    for shuffled, weighted in itertools.product([True, False], repeat=2):
        config, args = _general_call(kernels, dtype, shuffled=shuffled, weighted=weighted)
        done, diverged = _fit(kernels, config, args)
        assert (done, diverged) == (2, False)
        assert args["state"].step == 2 * 3  # batches of 4 rows of 9: three steps an epoch
        assert args["state"].samples_seen == 2 * 9


@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_loss_gradient_checks_every_buffer(kernels, dtype):
    config, args = _general_call(kernels, dtype, shuffled=False)
    n_rows = args["x"].shape[0]
    workspace = allocate_general_workspace((4, 5, 3), True, n_rows, dtype, training=False)
    grad = np.empty_like(args["params"])

    def call(**changes):
        a = dict(args, workspace=workspace, grad_out=grad)
        a.update(changes)
        return kernels.loss_gradient(config, a["params"], a["x"], a["y"], a["sample_weight"],
                                     a["workspace"], a["grad_out"])

    assert np.isfinite(call())
    for changes, message in [
            (dict(params=args["params"][1:].copy()), "params"),
            (dict(grad_out=grad[1:].copy()), "grad_out"),
            (dict(x=np.ascontiguousarray(args["x"][:, 1:])), "x"),
            (dict(y=np.ascontiguousarray(args["y"][1:])), "y"),
            (dict(sample_weight=args["sample_weight"][1:]), "sample_weight"),
            (dict(workspace=allocate_general_workspace((4, 5, 3), True, n_rows - 1, dtype,
                                                       training=False)),
             "workspace['activations']"),
            (dict(workspace={}), "activations")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            call(**changes)


def _valid_config_settings():
    """TrainConfig settings that are valid: a (4, 5, 3) relu/softmax network with Adam."""
    return dict(sizes=(4, 5, 3), bias=True, activations=(3,), output=3, reduction=1,
                alpha=0.0, optimizer=2, schedule=0, learning_rate_init=1e-3, momentum=0.9,
                nesterov=True, power_t=0.5, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                batch_size=4, check_every=0, n_threads=1)


@pytest.mark.parametrize("change, message", [
    (dict(sizes=(4,)), "sizes"),
    (dict(sizes=(4, 0, 3)), "sizes[1]"),
    (dict(activations=()), "hidden activation codes"),
    (dict(activations=(99,)), "activations[0]"),
    (dict(output=9), "output"),
    (dict(reduction=2), "reduction"),
    (dict(optimizer=-1), "optimizer"),
    (dict(schedule=3), "schedule"),
    (dict(batch_size=0), "batch_size"),
    (dict(sizes=(4, 2**31, 3)), "sizes[1]"),
    (dict(batch_size=2**31), "batch_size"),
    (dict(check_every=-1), "check_every"),
    (dict(n_threads=0), "n_threads"),
])
def test_train_config_rejects_bad_settings(change, message):
    settings = _valid_config_settings()
    _kernels.TrainConfig(**settings)
    settings.update(change)
    with pytest.raises(ValueError, match=re.escape(message)):
        _kernels.TrainConfig(**settings)


def test_train_config_is_fixed_once_built():
    """Re-running __init__ would free the sizes a fit may be reading without the GIL."""
    settings = _valid_config_settings()
    config = _kernels.TrainConfig(**settings)
    with pytest.raises(TypeError, match="fixed once built"):
        config.__init__(**dict(settings, sizes=(4, 9, 3)))
    assert list(config.sizes) == [4, 5, 3]


# --------------------------------------------------------------------------------------------
# The general path's tanh: branch-free (so loops over a layer vectorise), a few ulp from
# NumPy's in relative terms over the whole range, near 0 included.
# --------------------------------------------------------------------------------------------

# Measured: 3 ulp (float64, just above |x| = 1/2 where the exp formula starts), 2 ulp
# (float32, against the float64 value rounded to float32).
TANH_ULPS = {np.float32: 3, np.float64: 4}


def _tanh_inputs(dtype):
    tiny = np.finfo(dtype).tiny
    x = np.concatenate([np.linspace(-25, 25, 400_001), np.linspace(-0.6, 0.6, 200_001),
                        np.geomspace(tiny, 30, 20_001)]).astype(dtype)
    return np.concatenate([x, -x])


def test_tanh_is_a_few_ulp_from_numpys(kernels, dtype):
    x = _tanh_inputs(dtype)
    out = x.copy()
    kernels.tanh_inplace(out)
    exact = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact.astype(dtype))).astype(np.float64)
    error = np.abs(out.astype(np.float64) - exact) / ulp
    assert error.max() <= TANH_ULPS[dtype], (error.max(), x[error.argmax()])


def test_tanh_special_values(kernels, dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e4, -1e4, 40.0, -40.0], dtype=dtype)
    out = x.copy()
    kernels.tanh_inplace(out)
    assert_array_equal(out[:4], [0.0, -0.0, 1.0, -1.0])
    assert_array_equal(np.signbit(out[:2]), [False, True])
    assert np.isnan(out[4])
    assert_array_equal(out[5:], [1.0, -1.0, 1.0, -1.0])
    assert out.dtype == dtype


# ------------------------------------------------ regression losses, cosine schedule, clipping

ROBUST_LOSSES = {"absolute_error": None, "huber": 0.3, "quantile": 0.3}
EXTENSION_OPTIMIZERS = {
    "plain": GradientStep(learning_rate=0.1),
    "sgd": SGD(learning_rate=0.05, momentum=0.9),
    "adam": Adam(learning_rate=0.01),
}


def _extended_plan(sizes, optimizer, batch_size, shuffled, weighted, dtype, loss=None,
                   activations=("tanh", "relu"), output="identity", alpha=0.01, **losses):
    return FitPlan(sizes=tuple(sizes), bias=True, dtype=np.dtype(dtype),
                   activations=activations, output=output, reduction="mean", alpha=alpha,
                   optimizer=optimizer, learning_rate=optimizer.learning_rate,
                   batch_size=batch_size, shuffled=shuffled, weighted=weighted, loss=loss,
                   **losses)


def _loss_options(loss):
    return {} if ROBUST_LOSSES[loss] is None else {
        "huber_delta" if loss == "huber" else "quantile": ROBUST_LOSSES[loss]}


@pytest.mark.parametrize("optimizer", list(EXTENSION_OPTIMIZERS))
@pytest.mark.parametrize("loss", list(ROBUST_LOSSES))
def test_regression_losses_match_reference(dtype, loss, optimizer):
    """absolute_error, huber (delta 0.3: residuals on both sides of it) and quantile (0.3):
    fits with and without sample weights, full, uneven and shuffled batches, and the
    full-batch loss and gradient, on every build."""
    for weighted, batching in itertools.product([False, True], BATCHINGS):
        batch_size, shuffled = BATCHINGS[batching]
        X, y, weights, params = _problem(SIZES, N_ROWS, "identity", dtype, weighted)
        y *= 2  # residuals beyond huber's delta as well as within it
        plan = _extended_plan(SIZES, EXTENSION_OPTIMIZERS[optimizer],
                              N_ROWS if batch_size is None else batch_size, shuffled, weighted,
                              dtype, loss, **_loss_options(loss))
        orders = _orders(shuffled, N_EPOCHS, N_ROWS)
        expected = _fit_reference(plan, X, y, weights, params, N_EPOCHS, orders)
        assert not np.array_equal(expected[0], params)
        case = dict(loss=loss, weighted=weighted, batching=batching)
        for kernels, build in zip(BUILDS, BUILD_IDS):
            _assert_same_fit(expected,
                             _fit_kernel(kernels, plan, X, y, weights, params, N_EPOCHS,
                                         orders), dtype, dict(case, build=build))
            _assert_same_loss_gradient(kernels, plan, params, X, y, weights, dtype, case)


@pytest.mark.parametrize("loss", list(ROBUST_LOSSES))
def test_regression_losses_at_zero_residual(dtype, loss):
    """Rows whose targets are exactly the network's outputs (a last layer of zero weights
    outputs its bias, exactly, in any summation order): the derivative there is 0, in the
    kernel as in the reference; and the loss differs from squared error's (the loss code
    reaches the kernel)."""
    X, y, weights, params = _problem(SIZES, N_ROWS, "identity", dtype, True)
    weight_list, bias_list = _views(params)
    weight_list[-1][...] = 0
    y[::2] = bias_list[-1]
    y[1::2] *= 2
    plan = _extended_plan(SIZES, Adam(), N_ROWS, False, True, dtype, loss,
                          **_loss_options(loss))
    for kernels in BUILDS:
        _assert_same_loss_gradient(kernels, plan, params, X, y, weights, dtype, loss)
    squared = reference.loss_gradient(_extended_plan(SIZES, Adam(), N_ROWS, False, True,
                                                     dtype), params, X, y, weights)[0]
    assert reference.loss_gradient(plan, params, X, y, weights)[0] != squared


def _views(params):
    return param_views(params, SIZES, True)


def _cosine_optimizers():
    return {
        "sgd": SGD(learning_rate=0.05, momentum=0.9, schedule="cosine", epochs=5),
        "sgd_warmup": SGD(learning_rate=0.05, momentum=0.0, nesterov=False,
                          schedule="cosine", epochs=5, warmup_epochs=2),
        "adam": Adam(learning_rate=0.01, schedule="cosine", epochs=5),
        "adam_warmup": Adam(learning_rate=0.01, schedule="cosine", epochs=5, warmup_epochs=3),
    }


@pytest.mark.parametrize("optimizer", list(_cosine_optimizers()))
def test_cosine_schedule_matches_reference(dtype, optimizer):
    """Seven epochs of a five-epoch schedule (the last two at rate 0), in two kernel calls
    against the reference's one: the same parameters, moments, rate and position."""
    n_epochs = 7
    plan = _extended_plan(SIZES, _cosine_optimizers()[optimizer], 7, True, False, dtype)
    X, y, weights, params = _problem(SIZES, N_ROWS, "identity", dtype, False)
    orders = _orders(True, n_epochs, N_ROWS)
    expected = _fit_reference(plan, X, y, weights, params, n_epochs, orders)
    assert expected[1].epochs == n_epochs and expected[1].learning_rate == 0.0
    for kernels, build in zip(BUILDS, BUILD_IDS):
        result = _fit_kernel(kernels, plan, X, y, weights, params, n_epochs, orders)
        _assert_same_fit(expected, result, dtype, build)
        assert result[1].epochs == n_epochs


def _clipped_problem(sizes, n_rows, dtype, sparse):
    X, y, weights, params = _problem(sizes, n_rows, "identity", dtype, True)
    y *= 3
    if sparse:
        X[np.random.RandomState(2).uniform(size=X.shape) < 0.7] = 0
        X = as_csr(scipy.sparse.csr_matrix(X), "X", dtype)
    return X, y, weights, params


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_clipping_matches_reference(dtype, optimizer, sparse):
    """max_grad_norm small enough to clip every step (and the same fit unclipped moves
    elsewhere): skinny networks (the blocked step), BLAS-sized ones with and without kernel
    threads, dense and sparse X (serial sparse fits give up their row-by-row update)."""
    base = {"sgd": dict(learning_rate=0.05, momentum=0.9),
            "adam": dict(learning_rate=0.01)}[optimizer]
    Optimizer = SGD if optimizer == "sgd" else Adam
    for (sizes, n_rows, batch), n_threads in [(((5, 6, 4, 3), N_ROWS, 7), 1),
                                              (((20, 33, 17, 4), 61, 25), 1),
                                              (((20, 33, 17, 4), 61, 25), 3)]:
        X, y, weights, params = _clipped_problem(sizes, n_rows, dtype, sparse)
        plan = _extended_plan(sizes, Optimizer(**base, max_grad_norm=0.05), batch, True, True,
                              dtype)
        unclipped = _extended_plan(sizes, Optimizer(**base), batch, True, True, dtype)
        orders = _orders(True, N_EPOCHS, n_rows)
        expected = _fit_reference(plan, X, y, weights, params, N_EPOCHS, orders)
        free = _fit_reference(unclipped, X, y, weights, params, N_EPOCHS, orders)
        assert np.abs(expected[0] - free[0]).max() > 1e-3
        for kernels, build in zip(BUILDS, BUILD_IDS):
            _assert_same_fit(expected,
                             _fit_kernel(kernels, plan, X, y, weights, params, N_EPOCHS,
                                         orders, n_threads),
                             dtype, dict(sizes=sizes, n_threads=n_threads, build=build))


def test_clipping_a_small_gradient_changes_nothing(dtype):
    """A norm above every step's gradient norm: the clipped step's update path (all
    gradients first, one update) gives the unclipped fit's numbers."""
    X, y, weights, params = _problem(SIZES, N_ROWS, "identity", dtype, True)
    clipped = _extended_plan(SIZES, Adam(learning_rate=0.01, max_grad_norm=1e6), 7, False,
                             True, dtype)
    plain = _extended_plan(SIZES, Adam(learning_rate=0.01), 7, False, True, dtype)
    for kernels in BUILDS:
        a = _fit_kernel(kernels, clipped, X, y, weights, params, N_EPOCHS, None)
        b = _fit_kernel(kernels, plain, X, y, weights, params, N_EPOCHS, None)
        rtol, atol = GENERAL_RTOL[dtype], GENERAL_ATOL[dtype]
        assert_allclose(a[0], b[0], rtol=rtol, atol=atol)


@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_train_config_checks_the_new_settings(kernels):
    plan = _extended_plan(SIZES, Adam(), 7, False, False, np.float64)
    base = dict(sizes=SIZES, bias=True, activations=[2, 3], output=1, reduction=1, alpha=0.0,
                optimizer=2, schedule=0, learning_rate_init=0.01, momentum=0.9,
                nesterov=True, power_t=0.5, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                batch_size=7, check_every=0, n_threads=1)
    assert plan.loss_code == 0
    for change, message in [(dict(loss=4), "loss = 4 is not a code of Loss"),
                            (dict(loss=2, output=2), "needs the identity output"),
                            (dict(loss=2, loss_parameter=0.0), "Huber's delta must be > 0"),
                            (dict(loss=3, loss_parameter=1.0), "quantile must be in"),
                            (dict(max_grad_norm=-1.0), "max_grad_norm = -1.0"),
                            (dict(max_grad_norm=np.inf), "max_grad_norm = inf"),
                            (dict(schedule=3, schedule_epochs=0), "cosine schedule needs"),
                            (dict(schedule=3, schedule_epochs=4, warmup_epochs=4),
                             "cosine schedule needs")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            kernels.TrainConfig(**{**base, **change})


# --------------------------------------------------------------------------------------------
# Dropout: the kernel draws the masks nnfast.reference.dropout_masks states, from the plan's
# seed and each row's position in the fit (the optimizer state's samples_seen), and keeps the
# masked layers' derivatives as slopes.
# --------------------------------------------------------------------------------------------

def _dropout_plan(sizes, activations, optimizer, batch_size, dtype, rates, seed=12345,
                  output="softmax", weighted=True):
    plan = _extended_plan(sizes, optimizer, batch_size, True, weighted, dtype,
                          activations=activations, output=output, alpha=1e-3)
    return FitPlan(**{**plan.__dict__, "dropout": rates, "dropout_seed": seed})


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_dropout_matches_reference(dtype, optimizer):
    """Every activation under a mask (from outputs and from kept slopes), one and two masked
    layers, uneven shuffled batches over two kernel calls (the positions go on from the
    state's samples_seen), sample weights, every build; and the masks act (the fit differs
    from the unmasked one)."""
    Optimizer = {"sgd": lambda: SGD(learning_rate=0.05, momentum=0.9),
                 "adam": lambda: Adam(learning_rate=0.01)}[optimizer]
    for activations, rates in [(pair, (0.3, 0.5)) for pair in ACTIVATION_PAIRS] + [
            (("relu", "gelu"), (0.0, 0.4)), (("silu", "tanh"), (0.2, 0.0))]:
        X, y, weights, params = _problem(SIZES, N_ROWS, "softmax", dtype, True)
        plan = _dropout_plan(SIZES, activations, Optimizer(), 7, dtype, rates)
        orders = _orders(True, N_EPOCHS, N_ROWS)
        expected = _fit_reference(plan, X, y, weights, params, N_EPOCHS, orders)
        unmasked = _fit_reference(FitPlan(**{**plan.__dict__, "dropout": ()}), X, y, weights,
                                  params, N_EPOCHS, orders)
        assert np.abs(expected[0] - unmasked[0]).max() > 1e-4, activations
        for kernels, build in zip(BUILDS, BUILD_IDS):
            _assert_same_fit(expected,
                             _fit_kernel(kernels, plan, X, y, weights, params, N_EPOCHS,
                                         orders),
                             dtype, dict(activations=activations, rates=rates, build=build))


@pytest.mark.parametrize("n_threads", [1, 3])
@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_dropout_paths_match_reference(kernels, dtype, n_threads):
    """Dropout through the row-blocked step (every layer skinny), the skinny loops beside
    BLAS, BLAS-sized layers with kernel threads, and sparse X: the masks do not depend on the
    row blocks or threads."""
    cases = [((4, 100, 3), ("relu",), (0.25,)),
             ((6, 40, 12, 40, 1), ("gelu", "relu", "elu"), (0.1, 0.3, 0.2)),
             ((30, 9, 40, 3), ("relu", "silu"), (0.3, 0.3)),
             ((20, 33, 17, 4), ("relu", "softplus"), (0.2, 0.4))]
    for sizes, activations, rates in cases:
        output = "logistic" if sizes[-1] == 1 else "softmax"
        for sparse in (False, True):
            X, y, weights, params = _problem(sizes, 61, output, dtype, True)
            if sparse:
                X[np.random.RandomState(2).uniform(size=X.shape) < 0.6] = 0
                X = as_csr(scipy.sparse.csr_matrix(X), "X", dtype)
            plan = _dropout_plan(sizes, activations, Adam(learning_rate=0.01), 25, dtype,
                                 rates, output=output)
            orders = _orders(True, N_EPOCHS, 61)
            _assert_same_fit(_fit_reference(plan, X, y, weights, params, N_EPOCHS, orders),
                             _fit_kernel(kernels, plan, X, y, weights, params, N_EPOCHS,
                                         orders, n_threads),
                             dtype, dict(sizes=sizes, sparse=sparse))


def test_dropout_leaves_the_loss_gradient_alone(dtype):
    """loss_gradient (L-BFGS, Network.loss_gradient) evaluates the model with every unit:
    with dropout in the plan it is the plan's without."""
    X, y, weights, params = _problem(SIZES, N_ROWS, "softmax", dtype, True)
    plan = _dropout_plan(SIZES, ("relu", "gelu"), Adam(), N_ROWS, dtype, (0.5, 0.5))
    plain = FitPlan(**{**plan.__dict__, "dropout": ()})
    expected = reference.loss_gradient(plain, params, X, y, weights)
    for kernels in BUILDS:
        with kernel_build(kernels):
            loss, grad = _compiled.loss_gradient(plan, params, X, y, weights, 1)
        assert_allclose(loss, expected[0], rtol=GENERAL_RTOL[dtype])
        assert_allclose(grad, expected[1], rtol=GENERAL_RTOL[dtype], atol=GENERAL_ATOL[dtype])


@pytest.mark.parametrize("kernels", BUILDS, ids=BUILD_IDS)
def test_train_config_checks_dropout(kernels):
    base = dict(sizes=SIZES, bias=True, activations=[2, 3], output=1, reduction=1, alpha=0.0,
                optimizer=2, schedule=0, learning_rate_init=0.01, momentum=0.9,
                nesterov=True, power_t=0.5, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                batch_size=7, check_every=0, n_threads=1)
    kernels.TrainConfig(**base, dropout=(0.0, 0.5), dropout_seed=2**64 - 1)
    for change, message in [(dict(dropout=(0.5,)), "1 dropout rates for 2 hidden layers"),
                            (dict(dropout=(0.5, 1.0)), "dropout[1] = 1.0"),
                            (dict(dropout=(-0.1, 0.0)), "dropout[0] = -0.1")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            kernels.TrainConfig(**{**base, **change})
    with pytest.raises(OverflowError):
        kernels.TrainConfig(**base, dropout=(0.1, 0.1), dropout_seed=-1)
