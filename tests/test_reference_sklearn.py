"""``nnfast.reference``'s model families against the installed scikit-learn's MLP.

The same initial weights (drawn as scikit-learn's ``_init_coef`` draws them, from the same
seed), ``shuffle=False``, the same hyperparameters and data: after 10 epochs the weights,
biases, loss curve and optimizer state agree to float64 rounding, for every hidden activation,
optimizer and schedule, task (output and loss), alpha, batch size and with sample weights.
The general path with the original's options is checked against the original's arithmetic.
"""

import dataclasses
import itertools
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import (GENERAL_BACKENDS, HIDDEN_ACTIVATIONS, OPTIMIZER_CASES,
                      REFERENCE_SKLEARN_ATOL, REFERENCE_SKLEARN_RTOL, optimizer_cases)

import nnfast
from nnfast import reference
from nnfast._training.layout import optimizer_state_views, pack_params, param_views
from nnfast._training.plan import FitPlan, OptimizerState
from nnfast.optimizers import SGD, Adam, GradientStep

sklearn_nn = pytest.importorskip("sklearn.neural_network")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

N_ROWS, N_FEATURES, HIDDEN = 37, 5, (7, 4)
EPOCHS = 10
TASKS = ["binary", "multiclass", "multilabel", "regression", "poisson"]
# exp outputs blow up at the rates the other tasks train well with.
_RATE_SCALE = {"poisson": 0.1}
# Rows per batch: the full batch, and one that leaves a remainder (37 = 3 * 10 + 7).
BATCH_SIZES = [N_ROWS, 10]


def _task_data(task, dtype):
    """(X, y as scikit-learn takes it, Y as the network's target matrix, output, estimator)."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(N_ROWS, N_FEATURES)).astype(dtype)
    if task == "binary":
        labels = (X[:, 0] + 0.5 * rng.normal(size=N_ROWS) > 0).astype(int)
        return X, labels, labels[:, None].astype(dtype), "logistic", sklearn_nn.MLPClassifier
    if task == "multiclass":
        labels = np.arange(N_ROWS) % 3
        rng.shuffle(labels)
        return X, labels, np.eye(3, dtype=dtype)[labels], "softmax", sklearn_nn.MLPClassifier
    if task == "multilabel":
        Y = (rng.uniform(size=(N_ROWS, 3)) < 0.4).astype(int)
        Y[0] = 1  # every label present at least once, as a label binarizer wants
        return X, Y, Y.astype(dtype), "logistic", sklearn_nn.MLPClassifier
    if task == "regression":
        Y = (X[:, :2] * [0.8, -0.5] + 0.1 * rng.normal(size=(N_ROWS, 2)) + 1).astype(dtype)
        return X, Y, Y, "identity", sklearn_nn.MLPRegressor
    counts = rng.poisson(np.exp(0.4 * X[:, 0] + 0.5)).astype(dtype)
    return X, counts, counts[:, None], "exp", sklearn_nn.MLPRegressor


def _sample_weight(dtype):
    rng = np.random.RandomState(1)
    weight = rng.uniform(0.2, 2.0, N_ROWS).astype(dtype)
    weight[3] = 0  # a row that counts for nothing
    return weight


def _sklearn_fit(task, activation, case, alpha, batch_size, weighted, dtype, seed=0,
                 **overrides):
    X, y_sklearn, _, _, estimator = _task_data(task, dtype)
    solver_kwargs = dict(optimizer_cases()[case][0])
    solver_kwargs["learning_rate_init"] *= _RATE_SCALE.get(task, 1.0)
    solver_kwargs.update(overrides)
    if task == "poisson":
        solver_kwargs["loss"] = "poisson"
    kwargs = {"max_iter": EPOCHS, "tol": 0.0, "n_iter_no_change": EPOCHS + 1, **solver_kwargs}
    est = estimator(hidden_layer_sizes=HIDDEN, activation=activation, alpha=alpha,
                    batch_size=batch_size, shuffle=False, random_state=seed, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y_sklearn, sample_weight=_sample_weight(dtype) if weighted else None)
    return est


def _plan(output, activation, optimizer, alpha, batch_size, weighted, dtype, n_outputs):
    sizes = (N_FEATURES,) + HIDDEN + (n_outputs,)
    activations = (activation,) * len(HIDDEN) if isinstance(activation, str) else activation
    return FitPlan(sizes=sizes, bias=True, dtype=np.dtype(dtype), activations=activations,
                   output=output, reduction="mean", alpha=alpha, optimizer=optimizer,
                   learning_rate=optimizer.learning_rate, batch_size=batch_size,
                   shuffled=False, weighted=weighted)


def _reference_fit(task, activation, case, alpha, batch_size, weighted, dtype, seed=0,
                   optimizer=None, epochs=EPOCHS):
    """(params, state, epoch losses) of reference.make_runner on the same problem."""
    X, _, Y, output, _ = _task_data(task, dtype)
    if optimizer is None:
        optimizer = optimizer_cases()[case][1]
        optimizer = dataclasses.replace(
            optimizer, learning_rate=optimizer.learning_rate * _RATE_SCALE.get(task, 1.0))
    plan = _plan(output, activation, optimizer, alpha, batch_size, weighted, dtype, Y.shape[1])
    weights, biases = reference.init_coefs(plan.sizes, np.random.RandomState(seed), activation,
                                           dtype)
    params = pack_params(weights, biases)
    state = OptimizerState.fresh(plan)
    run = reference.make_runner(plan, X, Y, _sample_weight(dtype) if weighted else None)
    losses, done, diverged = run(params, state, epochs, None)
    assert (done, diverged) == (epochs, False)
    return plan, params, state, losses


def _assert_same_model(est, plan, params, state, losses, dtype):
    tolerance = {"rtol": REFERENCE_SKLEARN_RTOL[dtype], "atol": REFERENCE_SKLEARN_ATOL[dtype]}
    weights, biases = param_views(params, plan.sizes, plan.bias)
    assert len(est.coefs_) == len(weights)
    for ours, theirs in zip(weights + biases, est.coefs_ + est.intercepts_):
        assert ours.dtype == theirs.dtype == np.dtype(dtype)
        assert_allclose(ours, theirs, **tolerance)
    assert_allclose(losses, est.loss_curve_, **tolerance)
    assert state.samples_seen == est.t_
    optimizer = est._optimizer
    n_layers = len(weights)
    if plan.optimizer_name == "sgd":
        assert state.learning_rate == pytest.approx(optimizer.learning_rate, rel=1e-15)
        blocks = [optimizer_state_views(state.values, "sgd", plan.n_params)["velocity"]]
        theirs = [optimizer.velocities]
    else:
        assert state.step == optimizer.t
        views = optimizer_state_views(state.values, "adam", plan.n_params)
        blocks, theirs = [views["m"], views["v"]], [optimizer.ms, optimizer.vs]
    for block, their_arrays in zip(blocks, theirs):
        block_weights, block_biases = param_views(block, plan.sizes, plan.bias)
        for ours, their_array in zip(block_weights + block_biases,
                                     their_arrays[:n_layers] + their_arrays[n_layers:]):
            assert_allclose(ours, their_array, **tolerance)


# Every activation x optimizer x task; alpha, batch size and sample weights rotate through
# their values so that every pair of them meets every activation and optimizer.
_MATRIX = [
    (activation, case, task, alpha, batch_size, weighted)
    for (activation, case, task), (alpha, batch_size, weighted) in zip(
        itertools.product(HIDDEN_ACTIVATIONS, OPTIMIZER_CASES, TASKS),
        itertools.cycle(itertools.product([0.0, 0.01], BATCH_SIZES, [False, True])))
]


@pytest.mark.parametrize("activation, case, task, alpha, batch_size, weighted", _MATRIX)
def test_reference_trains_as_sklearns_mlp(activation, case, task, alpha, batch_size, weighted):
    dtype = np.float64
    est = _sklearn_fit(task, activation, case, alpha, batch_size, weighted, dtype)
    plan, params, state, losses = _reference_fit(task, activation, case, alpha, batch_size,
                                                 weighted, dtype)
    _assert_same_model(est, plan, params, state, losses, dtype)


@pytest.mark.parametrize("alpha, batch_size, weighted",
                         list(itertools.product([0.0, 1e-3, 0.5], BATCH_SIZES, [False, True])))
@pytest.mark.parametrize("case", OPTIMIZER_CASES)
def test_alpha_batches_and_weights_as_sklearn(case, alpha, batch_size, weighted):
    dtype = np.float64
    est = _sklearn_fit("multiclass", "tanh", case, alpha, batch_size, weighted, dtype)
    plan, params, state, losses = _reference_fit("multiclass", "tanh", case, alpha,
                                                 batch_size, weighted, dtype)
    _assert_same_model(est, plan, params, state, losses, dtype)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("case", ["sgd_nesterov", "adam"])
def test_float32_trains_as_sklearns_mlp_in_float32(task, case):
    dtype = np.float32
    est = _sklearn_fit(task, "relu", case, 1e-3, 10, True, dtype)
    plan, params, state, losses = _reference_fit(task, "relu", case, 1e-3, 10, True, dtype)
    _assert_same_model(est, plan, params, state, losses, dtype)


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_initial_weights_are_drawn_as_sklearns(activation):
    # One epoch with a zero learning rate leaves scikit-learn's weights as it drew them.
    est = _sklearn_fit("regression", activation, "sgd", 0.0, N_ROWS, False, np.float64,
                       seed=7, learning_rate_init=1e-300, max_iter=1)
    weights, biases = reference.init_coefs((N_FEATURES,) + HIDDEN + (2,),
                                           np.random.RandomState(7), activation)
    for ours, theirs in zip(weights + biases, est.coefs_ + est.intercepts_):
        assert_allclose(ours, theirs, rtol=1e-12, atol=0)


def test_adaptive_schedule_as_sklearn():
    """The caller divides the rate by 5 when its stopping rule fires (scikit-learn's
    estimator does so after n_iter_no_change epochs without improvement by tol)."""
    n_iter_no_change, tol = 2, 10.0  # tol so large that no epoch counts as an improvement
    est = _sklearn_fit("regression", "relu", "sgd_momentum", 1e-3, 10, True, np.float64,
                       learning_rate="adaptive", tol=tol, n_iter_no_change=n_iter_no_change)
    X, _, Y, output, _ = _task_data("regression", np.float64)
    optimizer = SGD(learning_rate=0.05, momentum=0.9, nesterov=False, schedule="adaptive")
    plan = _plan(output, "relu", optimizer, 1e-3, 10, True, np.float64, Y.shape[1])
    params = pack_params(*reference.init_coefs(plan.sizes, np.random.RandomState(0), "relu"))
    state = OptimizerState.fresh(plan)
    run = reference.make_runner(plan, X, Y, _sample_weight(np.float64))
    losses, best, stalled = [], np.inf, 0
    for _ in range(EPOCHS):
        losses.append(run(params, state, 1, None)[0][0])
        stalled = stalled + 1 if losses[-1] > best - tol else 0
        best = min(best, losses[-1])
        if stalled > n_iter_no_change:
            state.learning_rate /= 5
            stalled = 0
    assert state.learning_rate == pytest.approx(0.05 / 5**3, rel=1e-15)
    _assert_same_model(est, plan, params, state, np.array(losses), np.float64)


def test_per_layer_activations_train_each_layer_with_its_own():
    """Mixed hidden activations: each layer as scikit-learn's one-activation network would
    train it, checked by freezing the other layer's choice (a relu layer of small positive
    pre-activations is the identity on them)."""
    X, _, Y, output, _ = _task_data("regression", np.float64)
    optimizer = Adam(learning_rate=0.01)
    mixed = _plan(output, ("tanh", "relu"), optimizer, 0.0, 10, False, np.float64, 2)
    weights, biases = reference.init_coefs(mixed.sizes, np.random.RandomState(0), "tanh")
    layers = reference.forward_model(weights, biases, X, ("tanh", "relu"), output)
    # Hand-computed forward pass: tanh, then relu, then identity.
    hidden1 = np.tanh(X @ weights[0] + biases[0])
    hidden2 = np.maximum(hidden1 @ weights[1] + biases[1], 0)
    assert_allclose(layers[1], hidden1, rtol=1e-15)
    assert_allclose(layers[2], hidden2, rtol=1e-15)
    assert_allclose(layers[3], hidden2 @ weights[2] + biases[2], rtol=1e-15)
    # Backward: the gradient of each layer matches a central finite difference of the loss.
    params = pack_params(weights, biases)
    loss, grad = reference.loss_gradient(mixed, params, X, Y)
    rng = np.random.RandomState(3)
    for index in rng.choice(params.size, 12, replace=False):
        step = 1e-6
        plus, minus = params.copy(), params.copy()
        plus[index] += step
        minus[index] -= step
        numeric = (reference.loss_gradient(mixed, plus, X, Y)[0]
                   - reference.loss_gradient(mixed, minus, X, Y)[0]) / (2 * step)
        # squared_loss averages over the 2 outputs while its delta a - y is the gradient
        # of the sum over outputs, as scikit-learn's: G is 2x the loss's derivative.
        assert grad[index] == pytest.approx(2 * numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradient_is_sklearns_backprop(task, weighted):
    X, y_sklearn, Y, output, estimator = _task_data(task, np.float64)
    est = _sklearn_fit(task, "logistic", "sgd", 0.3, N_ROWS, weighted, np.float64)
    plan = _plan(output, "logistic", SGD(), 0.3, N_ROWS, weighted, np.float64, Y.shape[1])
    params = pack_params(est.coefs_, est.intercepts_)
    sample_weight = _sample_weight(np.float64) if weighted else None
    loss, grad = reference.loss_gradient(plan, params, X, Y, sample_weight)
    # scikit-learn's L-BFGS objective at the same point; its packing is coefs then
    # intercepts, nnfast's W0, b0, W1, b1, ...
    est._coef_indptr, est._intercept_indptr, start = [], [], 0
    for n_in, n_out in zip(plan.sizes, plan.sizes[1:]):
        est._coef_indptr.append((start, start + n_in * n_out, (n_in, n_out)))
        start += n_in * n_out
    for n_out in plan.sizes[1:]:
        est._intercept_indptr.append((start, start + n_out))
        start += n_out
    packed = np.hstack([a.ravel() for a in est.coefs_ + est.intercepts_])
    y_binarized = (est._label_binarizer.transform(y_sklearn)
                   if estimator is sklearn_nn.MLPClassifier else Y)
    n = len(plan.sizes) - 1
    their_loss, their_grad = est._loss_grad_lbfgs(
        packed, X, y_binarized, sample_weight, [X] + [None] * n, [None] * n,
        [np.empty((a, b)) for a, b in zip(plan.sizes, plan.sizes[1:])],
        [np.empty(b) for b in plan.sizes[1:]])
    assert loss == pytest.approx(their_loss, rel=1e-12)
    weights, biases = param_views(grad, plan.sizes, plan.bias)
    ours = np.hstack([a.ravel() for a in weights + biases])
    assert_allclose(ours, their_grad, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------- through Network

def _network_like(est, task, activation, case, alpha, backend):
    """A Network of the same model holding scikit-learn's initial weights for seed 0."""
    _, _, Y, output, _ = _task_data(task, np.float64)
    optimizer = optimizer_cases()[case][1]
    optimizer = dataclasses.replace(
        optimizer, learning_rate=optimizer.learning_rate * _RATE_SCALE.get(task, 1.0))
    net = nnfast.Network((N_FEATURES,) + HIDDEN + (Y.shape[1],), backend=backend, bias=True,
                         activation=activation, output=output, optimizer=optimizer,
                         alpha=alpha)
    weights, biases = reference.init_coefs(net.sizes, np.random.RandomState(0), activation)
    for k, (w, b) in enumerate(zip(weights, biases)):
        net.weights[k][...] = w
        net.biases[k][...] = b
    return net


def _assert_network_is(net, est, losses):
    plan = FitPlan(sizes=net.sizes, bias=True, dtype=net.dtype, activations=net.activations,
                   output=net.output, reduction=net.reduction, alpha=net.alpha,
                   optimizer=net.optimizer, learning_rate=net.optimizer.learning_rate,
                   batch_size=1, shuffled=False, weighted=False)
    _assert_same_model(est, plan, net.params, net.optimizer_state, np.asarray(losses),
                       np.float64)


@pytest.mark.parametrize("task", ["multiclass", "binary", "poisson"])
@pytest.mark.parametrize("case", OPTIMIZER_CASES)
@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_network_fit_trains_as_sklearns_mlp(backend, case, task):
    est = _sklearn_fit(task, "relu", case, 1e-3, 10, True, np.float64)
    net = _network_like(est, task, "relu", case, 1e-3, backend)
    X, _, Y, _, _ = _task_data(task, np.float64)
    net.fit(X, Y, EPOCHS, batch_size=10, shuffle=False, sample_weight=_sample_weight(np.float64),
            report_every=1)
    _assert_network_is(net, est, [loss for _, loss in net.history])


@pytest.mark.parametrize("case", OPTIMIZER_CASES)
@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_network_resume_is_sklearns_partial_fit(backend, case):
    X, y_sklearn, Y, _, _ = _task_data("multiclass", np.float64)
    est = _sklearn_fit("multiclass", "tanh", case, 1e-4, 10, False, np.float64, max_iter=1)
    kwargs = est.get_params()
    est = sklearn_nn.MLPClassifier(**kwargs)
    net = _network_like(est, "multiclass", "tanh", case, 1e-4, backend)
    losses = []
    for _ in range(4):
        est.partial_fit(X, y_sklearn, classes=[0, 1, 2])
        net.fit(X, Y, 1, batch_size=10, shuffle=False, resume=True, report_every=1)
        losses.append(net.history[-1][1])
    _assert_network_is(net, est, losses)


# ----------------------------------------------------------- the original, through the general path

@pytest.mark.parametrize("batch_size", [None, 3])
def test_general_path_with_the_originals_options_is_the_original(X, y3, batch_size):
    """output "original", summed plain steps, logistic hidden layers, no alpha: the general
    path's arithmetic is the original's (to rounding: the derivative's product order)."""
    x, y = X.astype(np.float64), y3.astype(np.float64)
    weights, _ = reference.init_params([3, 4, 1], 1)
    expected = [w.copy() for w in weights]
    errors = reference.fit(expected, None, x, y, 200, 0.7, batch_size)
    plan = FitPlan(sizes=(3, 4, 1), bias=False, dtype=np.dtype(np.float64),
                   activations=("logistic",), output="original", reduction="sum", alpha=0.0,
                   optimizer=GradientStep(0.7), learning_rate=0.7,
                   batch_size=batch_size or 4, shuffled=False, weighted=False)
    assert plan.is_original
    params = pack_params(weights, None)
    state = OptimizerState.fresh(plan)
    losses, done, diverged = reference.make_runner(plan, x, y, None)(params, state, 200, None)
    assert (done, diverged) == (200, False)
    assert_allclose(losses, errors, rtol=1e-13)
    for ours, theirs in zip(param_views(params, plan.sizes, False)[0], expected):
        assert_allclose(ours, theirs, rtol=1e-12)


def test_original_loss_gradient_is_the_originals_gradient(X, y3):
    """The plain step's G for output "original" is minus the original's update direction."""
    x, y = X.astype(np.float64), y3.astype(np.float64)
    weights, _ = reference.init_params([3, 4, 1], 1)
    expected, _ = reference.gradient(weights, None, x, y)
    plan = FitPlan(sizes=(3, 4, 1), bias=False, dtype=np.dtype(np.float64),
                   activations=("logistic",), output="original", reduction="sum", alpha=0.0,
                   optimizer=GradientStep(), learning_rate=1.0, batch_size=4, shuffled=False,
                   weighted=False)
    loss, grad = reference.loss_gradient(plan, pack_params(weights, None), x, y)
    outputs = reference.predict(weights, None, x)
    # The data loss is a mean over rows, whatever the reduction (nnfast._training.plan).
    assert loss == pytest.approx(0.5 * ((y - outputs) ** 2).mean(axis=0).sum(), rel=1e-14)
    for ours, theirs in zip(param_views(grad, plan.sizes, False)[0], expected):
        assert_allclose(ours, -theirs, rtol=1e-12)


def test_softmax_is_stable_for_huge_logits():
    Z = np.array([[1000.0, 0.0, -1000.0], [-1e308, -1e308, 0.0]])
    reference.inplace_softmax(Z)
    assert np.isfinite(Z).all()
    assert_allclose(Z.sum(axis=1), 1.0)
    assert Z[0, 0] == 1.0 and Z[1, 2] == 1.0


def test_module_exports_resolve():
    for name in reference.__all__:
        assert hasattr(reference, name), name
    assert nnfast.reference is reference
