"""The estimators' options beyond scikit-learn's MLP: the regressor's robust losses
(``loss="absolute_error" | "huber" | "quantile"``, ``huber_delta``, ``quantile``), the
``"cosine"`` schedule (``learning_rate="cosine"``, ``warmup_fraction``) and gradient
clipping (``max_grad_norm``).

scikit-learn has none of them, so the oracle is ``nnfast.reference``'s runner (itself held to
PyTorch in tests/test_reference_torch.py), given what the estimator's fit is defined to be:
scikit-learn's initial weights for the seed, the batches in stored order, the schedule's
length ``max_iter`` and warm-up ``round(warmup_fraction * max_iter)``. With every new option
at its default the estimators stay scikit-learn's (tests/sklearn/test_mlp_equivalence.py).
"""

import inspect
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split

from nnfast import Network, reference
from nnfast._training.layout import pack_params
from nnfast._training.plan import FitPlan, OptimizerState
from nnfast.optimizers import SGD, Adam
from nnfast.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RTOL = {np.float32: 2e-4, np.float64: 1e-9}
ATOL = {np.float32: 2e-5, np.float64: 1e-11}
HIDDEN = (7,)
BATCH = 16
SEED = 0


def _data(dtype, n_outputs=2):
    rs = np.random.RandomState(1)
    X = rs.randn(50, 4).astype(dtype)
    y = (X[:, :n_outputs] * 2 + rs.standard_t(2, (50, n_outputs))).astype(dtype)
    w = rs.uniform(0.2, 2.0, 50).astype(dtype)
    return X, y, w


def _optimizer(solver, learning_rate, max_iter, warmup_fraction=0.0, max_grad_norm=None,
               learning_rate_init=0.01):
    """The optimizer the estimator's fit is defined to use, written out independently."""
    cosine = dict(schedule="cosine", epochs=max_iter,
                  warmup_epochs=round(warmup_fraction * max_iter)) if learning_rate == "cosine" \
        else {}
    if solver == "sgd":
        return SGD(learning_rate=learning_rate_init, momentum=0.9, nesterov=True,
                   max_grad_norm=max_grad_norm, **cosine)
    return Adam(learning_rate=learning_rate_init, max_grad_norm=max_grad_norm, **cosine)


def _reference_fit(X, Y, w, optimizer, n_epochs, output="identity", loss=None, state=None,
                   params=None, **loss_options):
    """(params, state, epoch losses) of the reference's runner from scikit-learn's initial
    weights for SEED (or the params given), in stored order."""
    sizes = (X.shape[1], *HIDDEN, Y.shape[1])
    if params is None:
        coefs, intercepts = reference.init_coefs(sizes, np.random.RandomState(SEED), "relu",
                                                 X.dtype)
        params = pack_params(coefs, intercepts)
    plan = FitPlan(sizes=sizes, bias=True, dtype=X.dtype, activations=("relu",) * len(HIDDEN),
                   output=output, reduction="mean", alpha=1e-4, optimizer=optimizer,
                   learning_rate=optimizer.learning_rate, batch_size=BATCH, shuffled=False,
                   weighted=w is not None, loss=loss, **loss_options)
    state = OptimizerState.fresh(plan) if state is None else state
    losses, done, diverged = reference.make_runner(plan, X, Y, w)(params, state, n_epochs, None)
    assert (done, diverged) == (n_epochs, False)
    return params, state, losses


def _estimator_params(model):
    weights, biases = model.coefs_, model.intercepts_
    return pack_params(weights, biases)


def _regressor(**options):
    return MLPRegressor(hidden_layer_sizes=HIDDEN, batch_size=BATCH, shuffle=False,
                        random_state=SEED, learning_rate_init=0.01, n_iter_no_change=1000,
                        **options)


LOSS_OPTIONS = {"absolute_error": {}, "huber": {"huber_delta": 0.5},
                "quantile": {"quantile": 0.8}}


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("loss", list(LOSS_OPTIONS))
def test_regressor_losses_match_reference(dtype, loss, solver, weighted):
    X, y, w = _data(dtype)
    w = w if weighted else None
    model = _regressor(loss=loss, solver=solver, max_iter=6, **LOSS_OPTIONS[loss])
    model.fit(X, y, sample_weight=w)
    params, _, losses = _reference_fit(X, y, w, _optimizer(solver, "constant", 6), 6,
                                       loss=loss, **LOSS_OPTIONS[loss])
    assert_allclose(_estimator_params(model), params, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(model.loss_curve_, losses, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert model.coefs_[0].dtype == dtype


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_cosine_and_clipping_match_reference(dtype, solver):
    """Both estimators: the schedule with a warm-up (round(0.25 * 9) = 2 epochs) and
    clipping that engages, against the reference's fit; the same fit unclipped differs."""
    X, y, w = _data(dtype)
    options = dict(solver=solver, learning_rate="cosine", warmup_fraction=0.25,
                   max_grad_norm=0.3, max_iter=9)
    model = _regressor(loss="huber", **options).fit(X, y, sample_weight=w)
    params, state, losses = _reference_fit(
        X, y, w, _optimizer(solver, "cosine", 9, 0.25, 0.3), 9, loss="huber")
    assert_allclose(_estimator_params(model), params, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(model.loss_curve_, losses, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert model._network.optimizer_state.epochs == state.epochs == 9
    free, _, _ = _reference_fit(X, y, w, _optimizer(solver, "cosine", 9, 0.25), 9, loss="huber")
    assert np.abs(free - params).max() > 1e-3

    labels = (y[:, 0] > 0).astype(int) + (y[:, 1] > 1)
    classifier = MLPClassifier(hidden_layer_sizes=HIDDEN, batch_size=BATCH, shuffle=False,
                               random_state=SEED, learning_rate_init=0.01,
                               n_iter_no_change=1000, **options).fit(X, labels)
    Y = np.eye(3, dtype=dtype)[labels]
    params, _, losses = _reference_fit(X, Y, None, _optimizer(solver, "cosine", 9, 0.25, 0.3),
                                       9, output="softmax")
    assert_allclose(_estimator_params(classifier), params, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(classifier.loss_curve_, losses, rtol=RTOL[dtype], atol=ATOL[dtype])


def test_partial_fit_continues_the_schedule_past_its_end():
    """Seven partial_fit calls of a five-epoch schedule: the reference's seven epochs (the
    last two at rate 0, which leaves Adam's weights where they were)."""
    X, y, _ = _data(np.float64)
    model = _regressor(learning_rate="cosine", max_iter=5, warmup_fraction=0.2)
    history = []
    for _ in range(7):
        model.partial_fit(X, y)
        history.append(_estimator_params(model))
    params, state, _ = _reference_fit(X, y, None, _optimizer("adam", "cosine", 5, 0.2), 7)
    assert_allclose(history[-1], params, rtol=1e-9, atol=1e-11)
    assert model._network.optimizer_state.epochs == state.epochs == 7
    assert np.array_equal(history[4], history[6])
    assert not np.array_equal(history[3], history[4])


def test_warm_start_continues_the_schedule():
    """A warm start goes on from the schedule's position, with the new max_iter's schedule
    and a new optimizer (as scikit-learn's warm start): epochs 0-3 of a 4-epoch schedule,
    then, as a fit runs max_iter epochs, positions 4-11 of an 8-epoch one (the last four
    at rate 0: the velocities still carry SGD's momentum)."""
    X, y, _ = _data(np.float64)
    model = _regressor(solver="sgd", learning_rate="cosine", max_iter=4, warm_start=True)
    model.fit(X, y)
    model.set_params(max_iter=8).fit(X, y)
    params, state, _ = _reference_fit(X, y, None, _optimizer("sgd", "cosine", 4), 4)
    fresh = OptimizerState(np.zeros_like(state.values), samples_seen=state.samples_seen,
                           learning_rate=0.01, epochs=4)
    params, state, _ = _reference_fit(X, y, None, _optimizer("sgd", "cosine", 8), 8,
                                      state=fresh, params=params)
    assert_allclose(_estimator_params(model), params, rtol=1e-9, atol=1e-11)
    assert model._network.optimizer_state.epochs == state.epochs == 12
    assert model._network.optimizer_state.learning_rate == 0.0


def test_early_stopping_scores_r2_whatever_the_loss():
    """The held-out score of a quantile fit is R^2 of its predictions (the split as
    scikit-learn draws it: after the initial weights, from the same RandomState)."""
    X, y, _ = _data(np.float64, n_outputs=1)
    y = y.ravel()
    model = _regressor(loss="quantile", quantile=0.7, early_stopping=True, max_iter=1,
                       validation_fraction=0.2)
    model.fit(X, y)
    rs = np.random.RandomState(SEED)
    reference.init_coefs((4, *HIDDEN, 1), rs)
    _, X_val, _, y_val = train_test_split(X, y, random_state=rs, test_size=0.2)
    assert_allclose(model.validation_scores_[0], r2_score(y_val, model.predict(X_val)),
                    rtol=1e-12)


def test_lbfgs_minimises_the_robust_loss():
    """L-BFGS takes the robust loss too (clipping and the schedule do not apply): its final
    loss is the reference's at its weights, and below squared error's fit's Huber loss."""
    X, y, _ = _data(np.float64)
    model = _regressor(solver="lbfgs", loss="huber", max_iter=50).fit(X, y)
    sizes = (4, *HIDDEN, 2)
    plan = FitPlan(sizes=sizes, bias=True, dtype=np.dtype(np.float64), activations=("relu",),
                   output="identity", reduction="mean", alpha=1e-4, optimizer=Adam(),
                   learning_rate=0.001, batch_size=50, shuffled=False, weighted=False,
                   loss="huber")
    loss, _ = reference.loss_gradient(plan, _estimator_params(model), X, y)
    assert_allclose(model.loss_, loss, rtol=1e-10)
    squared = _regressor(solver="lbfgs", max_iter=50).fit(X, y)
    assert reference.loss_gradient(plan, _estimator_params(squared), X, y)[0] > loss


def test_new_parameters_clone_pickle_and_repr():
    model = _regressor(loss="quantile", quantile=0.9, learning_rate="cosine",
                       warmup_fraction=0.1, max_grad_norm=2.0, huber_delta=3.0, max_iter=3)
    params = clone(model).get_params()
    for name, value in dict(loss="quantile", quantile=0.9, learning_rate="cosine",
                            warmup_fraction=0.1, max_grad_norm=2.0, huber_delta=3.0).items():
        assert params[name] == value
        assert f"{name}={value!r}" in repr(model)
    X, y, _ = _data(np.float64)
    model.fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    assert_allclose(restored.predict(X), model.predict(X), rtol=0)
    restored.partial_fit(X, y)
    model.partial_fit(X, y)
    assert_allclose(_estimator_params(restored), _estimator_params(model), rtol=0)
    assert restored._network.optimizer_state.epochs == 4
    # Keyword-only, after scikit-learn's parameters and nnfast's earlier ones.
    for Estimator, names in [(MLPRegressor, ["warmup_fraction", "max_grad_norm", "huber_delta",
                                             "quantile"]),
                             (MLPClassifier, ["warmup_fraction", "max_grad_norm"])]:
        parameters = inspect.signature(Estimator).parameters
        order = list(parameters)
        assert order.index("n_threads") < min(order.index(name) for name in names)
        assert [order[i] for i in sorted(order.index(name) for name in names)] == names
        assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in names)


def test_validation_loss_is_the_robust_loss():
    """Validation data's loss curve is the fit's own loss, with its parameter (without the
    L2 term), as the reference computes it."""
    X, y, _ = _data(np.float64)
    model = _regressor(loss="huber", huber_delta=0.4, max_iter=2).fit(X[:40], y[:40],
                                                                         X_val=X[40:],
                                                                         y_val=y[40:])
    expected = reference.REGRESSION_LOSSES["huber"](y[40:], model.predict(X[40:]), None, 0.4)
    assert_allclose(model.validation_loss_curve_[-1], expected, rtol=1e-12)


@pytest.mark.parametrize("params, message", [
    (dict(learning_rate="cosine", warmup_fraction=0.95, max_iter=10),
     "warmup_fraction=0.95 warms up for all 10 epochs"),
])
def test_a_warm_up_without_a_cosine_epoch_is_refused(params, message):
    X, y, _ = _data(np.float64)
    model = _regressor(**params)
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)
    assert not hasattr(model, "coefs_")


@pytest.mark.parametrize("make, error, message", [
    (lambda: Network([3, 2], output="softmax", loss="huber"), ValueError,
     "needs output='identity'"),
    (lambda: Network([3, 2], output="identity", loss="hubber"), ValueError,
     "unknown loss 'hubber'"),
    (lambda: Network([3, 2], output="identity", loss=1), TypeError, "loss must be a string"),
    (lambda: Network([3, 2], output="identity", huber_delta=0), ValueError,
     "huber_delta must be > 0"),
    (lambda: Network([3, 2], output="identity", quantile=1.0), ValueError,
     r"quantile must be in \(0, 1\)"),
    (lambda: Network([3, 2], output="identity", quantile="a"), TypeError, "quantile"),
    (lambda: Adam(schedule="cosine"), ValueError, "needs epochs"),
    (lambda: Adam(schedule="cosine", epochs=3, warmup_epochs=3), ValueError,
     "warmup_epochs must be < epochs"),
    (lambda: SGD(epochs=3), ValueError, "belong to schedule 'cosine'"),
    (lambda: SGD(schedule="cosine", epochs=2.0), TypeError, "epochs must be an integer"),
    (lambda: Adam(max_grad_norm=0), ValueError, "max_grad_norm must be > 0"),
    (lambda: Adam(max_grad_norm=float("nan")), ValueError, "max_grad_norm must be finite"),
    (lambda: Adam(schedule="invscaling"), ValueError, "unknown schedule"),
])
def test_network_and_optimizer_options_are_checked(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_network_options_assigned_between_fits_are_checked():
    X, y, _ = _data(np.float64)
    net = Network([4, 2], output="identity", bias=True)
    net.loss = "quantile"
    net.quantile = 2.0
    before = net.params.copy()
    with pytest.raises(ValueError, match="quantile must be in"):
        net.fit(X, y, 2)
    assert np.array_equal(net.params, before)
