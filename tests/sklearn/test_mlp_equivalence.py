"""``nnfast.sklearn.MLPClassifier`` / ``MLPRegressor`` against the installed scikit-learn's.

The same ``random_state`` draws the same initial weights (and row orders, and early-stopping
split) in both, so with the same hyperparameters and data both must end with the same
``coefs_``, ``intercepts_`` and ``loss_curve_`` to rounding: float64 to a relative 1e-9 of
each array's scale after 10 epochs (``MLP_RTOL``), float32 looser. The matrix covers every
hidden activation, solver (sgd with and without (Nesterov) momentum, adam, lbfgs), L2
penalty, batch size and task (binary, multiclass, multilabel, regression, multi-output
regression, Poisson), sample weights, the learning-rate schedules, early stopping,
warm_start, partial_fit and shuffling. Then ``class_weight`` against sample weights given to
scikit-learn, and default-parameter cross-validated scores on scikit-learn's datasets.
"""

import os
import types
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import neural_network
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits, load_iris,
                              load_wine, make_friedman1)
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from conftest import MLP_RTOL, assert_same_mlp
from nnfast import Network
from nnfast._training.layout import PackedLayout, param_views
from nnfast.sklearn import MLPClassifier, MLPRegressor

# Ten epochs, stored row order, a small two-hidden-layer network: every case below starts
# from these and changes what it tests.
BASE = dict(hidden_layer_sizes=(6, 5), max_iter=10, shuffle=False, random_state=0,
            batch_size=16, learning_rate_init=0.01)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(task, dtype=np.float64, n_rows=50, n_features=4):
    """Standardised inputs and targets of a task, from RandomState(0)."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n_rows, n_features))
    score = X @ rng.normal(size=(n_features, 3)) + 0.3 * rng.normal(size=(n_rows, 3))
    y = {
        "binary": np.where(score[:, 0] > 0, "yes", "no"),
        "multiclass": score.argmax(axis=1) + 10,
        "multilabel": (score > 0).astype(int),
        "regression": 3 * score[:, 0] + 1,
        "multioutput": score[:, :2],
        "poisson": np.exp(0.5 * score[:, 0]),
    }[task]
    return X.astype(dtype), y


def _pair(task, **params):
    """(nnfast's estimator, scikit-learn's) with the same parameters."""
    params = {**BASE, **params}
    if task in ("regression", "multioutput", "poisson"):
        if task == "poisson":
            params["loss"] = "poisson"
        return MLPRegressor(**params), neural_network.MLPRegressor(**params)
    return MLPClassifier(**params), neural_network.MLPClassifier(**params)


def _fit_both(task, dtype=np.float64, sample_weight=None, **params):
    ours, theirs = _pair(task, **params)
    X, y = _data(task, dtype)
    ours.fit(X, y, sample_weight=sample_weight)
    theirs.fit(X, y, sample_weight=sample_weight)
    return ours, theirs


CASES = {
    # every hidden activation, with each solver family
    "identity-adam": ("multiclass", dict(activation="identity")),
    "logistic-adam": ("multiclass", dict(activation="logistic")),
    "tanh-adam": ("multiclass", dict(activation="tanh")),
    "relu-adam": ("multiclass", dict(activation="relu")),
    "relu-sgd-nesterov": ("binary", dict(solver="sgd")),
    "tanh-sgd-momentum": ("binary", dict(solver="sgd", activation="tanh",
                                         nesterovs_momentum=False, momentum=0.5)),
    "logistic-sgd-plain": ("binary", dict(solver="sgd", activation="logistic", momentum=0.0,
                                          learning_rate_init=0.1)),
    "relu-lbfgs": ("multiclass", dict(solver="lbfgs")),
    "tanh-lbfgs-regression": ("regression", dict(solver="lbfgs", activation="tanh")),
    "logistic-lbfgs-multilabel": ("multilabel", dict(solver="lbfgs", activation="logistic")),
    "identity-lbfgs-binary": ("binary", dict(solver="lbfgs", activation="identity")),
    "lbfgs-max-fun": ("multiclass", dict(solver="lbfgs", max_fun=7, max_iter=50)),
    "lbfgs-tol": ("regression", dict(solver="lbfgs", tol=0.05, max_iter=50)),  # stops at 31
    # depth: no hidden layer (a linear model), an int for one layer
    "no-hidden-layer": ("multiclass", dict(hidden_layer_sizes=())),
    "no-hidden-layer-lbfgs": ("regression", dict(hidden_layer_sizes=(), solver="lbfgs")),
    "one-layer-as-int": ("binary", dict(hidden_layer_sizes=3, solver="sgd")),
    # L2 penalty
    "alpha-0": ("multiclass", dict(alpha=0.0)),
    "alpha-1": ("regression", dict(alpha=1.0, solver="sgd")),
    "alpha-lbfgs": ("binary", dict(alpha=0.5, solver="lbfgs")),
    # batch sizes: one row, a remainder batch, "auto" (the full 50 here), more than the rows
    "batch-1": ("binary", dict(batch_size=1, max_iter=3)),
    "batch-7": ("multiclass", dict(batch_size=7, solver="sgd")),
    "batch-auto": ("regression", dict(batch_size="auto")),
    # tasks
    "multilabel-adam": ("multilabel", dict()),
    "multioutput-sgd": ("multioutput", dict(solver="sgd")),
    "poisson-adam": ("poisson", dict()),
    "poisson-lbfgs": ("poisson", dict(solver="lbfgs", activation="tanh")),
    # schedules ("adaptive" with a tol no epoch meets divides the rate every 2 epochs)
    "invscaling": ("regression", dict(solver="sgd", learning_rate="invscaling",
                                      learning_rate_init=0.05, power_t=0.3)),
    "adaptive": ("multiclass", dict(solver="sgd", learning_rate="adaptive", tol=10.0,
                                    n_iter_no_change=1, max_iter=12)),
    # stopping on the training loss
    "stops-on-loss": ("binary", dict(tol=10.0, n_iter_no_change=2, max_iter=50)),
    # ... after progress: epochs that cannot stop the fit run in chunks whose length follows
    # the count of epochs without progress, which resets mid-fit here (stops at 65)
    "stops-after-progress": ("multiclass", dict(tol=3e-3, n_iter_no_change=3, max_iter=200,
                                                shuffle=True)),
    # ... and "adaptive" dividing the rate between such chunks, five times in 80 epochs
    "adaptive-after-progress": ("multiclass", dict(solver="sgd", learning_rate="adaptive",
                                                   tol=3e-3, n_iter_no_change=2, max_iter=80,
                                                   shuffle=True)),
    # scikit-learn's shuffling
    "shuffle-adam": ("multiclass", dict(shuffle=True)),
    "shuffle-sgd-regression": ("regression", dict(shuffle=True, solver="sgd")),
    "shuffle-full-batch": ("multiclass", dict(shuffle=True, batch_size="auto")),
    "shuffle-full-batch-early-stopping": ("binary", dict(shuffle=True, batch_size=45,
                                                         early_stopping=True, max_iter=20)),
    # early stopping: its split (stratified for binary), scores and the best epoch's weights
    "early-stopping-binary": ("binary", dict(early_stopping=True, max_iter=30,
                                             validation_fraction=0.2)),
    "early-stopping-regression": ("regression", dict(early_stopping=True, shuffle=True,
                                                     max_iter=30, n_iter_no_change=3)),
    "early-stopping-adaptive": ("multiclass", dict(early_stopping=True, solver="sgd",
                                                   learning_rate="adaptive", tol=10.0,
                                                   n_iter_no_change=1, max_iter=8)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_matches_scikit_learn(case, mlp_backend):
    task, params = CASES[case]
    ours, theirs = _fit_both(task, **params)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


def test_batch_size_above_the_rows_warns_and_is_clipped(mlp_backend):
    ours, theirs = _pair("regression", batch_size=80)
    X, y = _data("regression")
    # scikit-learn's warnings: the same classes and texts, in the same order.
    assert _warnings_of(ours.fit, X, y) == _warnings_of(theirs.fit, X, y)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


def _warnings_of(function, *args, **kwargs):
    """[(class, text)] of the warnings function(*args, **kwargs) gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function(*args, **kwargs)
    return [(w.category, str(w.message)) for w in caught]


def _outcome(function, *args, **kwargs):
    """("ok", warnings) or (exception class, message, warnings) of a call."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            function(*args, **kwargs)
            result = ("ok",)
        except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
            result = (type(exc), str(exc))
    return result + ([(w.category, str(w.message)) for w in caught
                      if not issubclass(w.category, RuntimeWarning)],)


# Fits that stop early, and "adaptive" ones whose rate drops mid-fit (the network's run is
# stopped and resumed, the row orders go on).
STOPPING = {
    "max_iter": {},
    "stalled": {"tol": 0.5, "n_iter_no_change": 2},
    "adaptive": {"solver": "sgd", "learning_rate": "adaptive", "tol": 0.5,
                 "n_iter_no_change": 1},
}


@pytest.mark.parametrize("stopping", list(STOPPING))
@pytest.mark.parametrize("batch_size", [16, "auto"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_random_state_instance_ends_where_scikit_learns_does(batch_size, early_stopping,
                                                             stopping, mlp_backend):
    # A RandomState passed as random_state is drawn from in place, by both, in the same order
    # and number (initial weights, split, one shuffle per epoch): the same fit, and the same
    # state afterwards.
    states = [np.random.RandomState(3), np.random.RandomState(3)]
    X, y = _data("binary")
    params = {**BASE, "shuffle": True, "batch_size": batch_size,
              "early_stopping": early_stopping, "max_iter": 12, **STOPPING[stopping]}
    ours = MLPClassifier(**{**params, "random_state": states[0]}).fit(X, y)
    theirs = neural_network.MLPClassifier(**{**params, "random_state": states[1]}).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    if stopping == "stalled":
        assert ours.n_iter_ < 12
    if stopping == "adaptive":
        assert theirs._optimizer.learning_rate < theirs.learning_rate_init
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])
    assert_array_equal(states[0].randint(1 << 30, size=5), states[1].randint(1 << 30, size=5))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_sample_weight_matches_scikit_learn(task, solver, mlp_backend):
    weights = np.random.RandomState(1).uniform(0, 2, size=50)
    weights[:5] = 0
    ours, theirs = _fit_both(task, sample_weight=weights, solver=solver)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


@pytest.mark.parametrize("case", ["relu-adam", "tanh-sgd-momentum", "relu-lbfgs",
                                  "early-stopping-binary", "shuffle-adam"])
def test_float32_matches_scikit_learn(case, mlp_backend):
    task, params = CASES[case]
    if params.get("solver") == "lbfgs":
        # scikit-learn's L-BFGS turns float32 weights into float64 ones after the first
        # step; nnfast's stay float32, so only the first iterations can agree.
        params = {**params, "max_iter": 3}
    ours, theirs = _fit_both(task, np.float32, **params)
    assert all(c.dtype == np.float32 for c in ours.coefs_ + ours.intercepts_)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float32])


@pytest.mark.parametrize("task", ["regression", "multioutput", "poisson"])
def test_float32_early_stopping_scores_float64_targets_as_scikit_learn(task, mlp_backend):
    # float32 X, float64 y: scikit-learn's held-out R^2 compares the float32 predictions
    # with the float64 targets in float64. Scored in float32 instead, epochs whose scores
    # differ beyond float32's digits tie and another epoch's weights are kept (seen in
    # tests/sklearn/test_mlp_differential.py, case 15000169, which fails without float64 scores).
    ours, theirs = _fit_both(task, np.float32, early_stopping=True, max_iter=15, tol=0.0,
                             n_iter_no_change=15, validation_fraction=0.2)
    # Scored as scikit-learn scores, in float64: equal to float32 training's rounding.
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_,
                               rtol=MLP_RTOL[np.float32])
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float32])


@pytest.mark.parametrize("solver, schedule", [("sgd", "constant"), ("sgd", "invscaling"),
                                              ("adam", "constant"), ("lbfgs", "constant")])
def test_warm_start_continues_from_assigned_weights(solver, schedule, mlp_backend):
    X, y = _data("multiclass")
    # "invscaling": the second fit's new optimizer goes on from the rows the first one saw.
    ours, theirs = _pair("multiclass", solver=solver, learning_rate=schedule, warm_start=True,
                         max_iter=5)
    for model in (ours, theirs):
        model.fit(X, y)
        # Weights assigned between fits are where the next fit starts.
        model.coefs_[0] = model.coefs_[0] * 0.5
        model.intercepts_[-1] = np.zeros_like(model.intercepts_[-1])
        model.fit(X, y)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])
    if solver != "lbfgs":
        assert len(ours.loss_curve_) == 10 and ours.t_ == 10 * len(X)


@pytest.mark.parametrize("task, solver", [("multiclass", "adam"), ("binary", "sgd"),
                                          ("regression", "adam"), ("multilabel", "sgd")])
def test_partial_fit_keeps_the_optimizer_state(task, solver, mlp_backend):
    X, y = _data(task)
    params = dict(solver=solver, learning_rate="invscaling") if solver == "sgd" else {}
    ours, theirs = _pair(task, **params)
    classes = {"binary": ["no", "yes"], "multiclass": [10, 11, 12],
               "multilabel": [0, 1, 2]}.get(task)
    for step in range(4):
        rows = slice(step * 10, step * 10 + 25)
        for model in (ours, theirs):
            kwargs = {"classes": classes} if classes is not None and step == 0 else {}
            model.partial_fit(X[rows], y[rows], **kwargs)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])
    assert ours.n_iter_ == theirs.n_iter_ == 1 and ours.t_ == theirs.t_


def test_partial_fit_after_fit_continues_its_optimizer(mlp_backend):
    X, y = _data("multiclass")
    ours, theirs = _pair("multiclass", max_iter=4, shuffle=True)
    for model in (ours, theirs):
        model.fit(X, y)
        model.partial_fit(X[:30], y[:30])
        model.partial_fit(X[20:], y[20:])
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


@pytest.mark.parametrize("class_weight", ["balanced", {10: 3.0, 12: 0.5}])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_class_weight_is_sample_weight_per_class(class_weight, solver, mlp_backend):
    X, y = _data("multiclass")
    row_weights = np.linspace(0.5, 1.5, len(y))
    ours = MLPClassifier(**BASE, solver=solver, class_weight=class_weight)
    theirs = neural_network.MLPClassifier(**BASE, solver=solver)
    ours.fit(X, y, sample_weight=row_weights)
    theirs.fit(X, y, sample_weight=row_weights * compute_sample_weight(class_weight, y))
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


def test_class_weight_dict_in_partial_fit_batches_missing_a_class(mlp_backend):
    X, y = _data("multiclass")
    class_weight = {10: 3.0, 12: 0.5}
    ours = MLPClassifier(**BASE, class_weight=class_weight)
    theirs = neural_network.MLPClassifier(**BASE)
    for rows in (y != 12, y != 10, slice(None)):
        weights = np.array([class_weight.get(label, 1.0) for label in y[rows]])
        ours.partial_fit(X[rows], y[rows], classes=[10, 11, 12])
        theirs.partial_fit(X[rows], y[rows], sample_weight=weights, classes=[10, 11, 12])
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


def test_predictions_match_scikit_learn(mlp_backend):
    for task in ("binary", "multiclass", "multilabel", "regression", "multioutput", "poisson"):
        ours, theirs = _fit_both(task)
        X, _ = _data(task)
        X_new = X[::-1] * 1.5
        if hasattr(theirs, "predict_proba"):
            assert_array_equal(ours.predict(X_new), theirs.predict(X_new))
            assert_allclose(ours.predict_proba(X_new), theirs.predict_proba(X_new), rtol=1e-9)
            assert_allclose(ours.predict_log_proba(X_new), theirs.predict_log_proba(X_new),
                            rtol=1e-9)
            assert_array_equal(ours.classes_, theirs.classes_)
        else:
            assert_allclose(ours.predict(X_new), theirs.predict(X_new), rtol=1e-9)
        assert ours.score(X, _data(task)[1]) == pytest.approx(theirs.score(X, _data(task)[1]))
        for name in ("n_layers_", "n_outputs_", "out_activation_", "n_features_in_"):
            assert getattr(ours, name) == getattr(theirs, name), name


def test_stopping_and_warnings_match_scikit_learn(mlp_backend, capsys):
    X, y = _data("multiclass")
    runs = {}
    for Model in (MLPClassifier, neural_network.MLPClassifier):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = Model(**{**BASE, "max_iter": 7, "verbose": True}).fit(X, y)
        runs[Model] = (model.n_iter_, [type(w.message) for w in caught],
                       capsys.readouterr().out.splitlines())
        if Model is MLPClassifier:
            assert [w.filename for w in caught] == [__file__]  # points at the caller
    ours, theirs = runs.values()
    assert ours[0] == theirs[0] == 7
    assert ours[1] == theirs[1] == [ConvergenceWarning]
    # The same lines, numbers printed to 8 digits.
    assert ours[2] == theirs[2]


def test_lbfgs_at_a_threaded_size_matches_scikit_learn(mlp_backend):
    # 400 rows of digits, (100,) units: evaluations large enough to run on the kernel's
    # threads (nnfast.network's _PARALLEL_MIN_FLOPS).
    X, y = load_digits(return_X_y=True)
    X, y = StandardScaler().fit_transform(X[:400]), y[:400]
    params = dict(solver="lbfgs", max_iter=10, random_state=0)
    ours = MLPClassifier(n_threads=2, **params)
    theirs = neural_network.MLPClassifier(**params)
    for model in (ours, theirs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_stochastic_fit_at_a_team_step_size_matches_scikit_learn(mlp_backend, solver):
    # Digits' batches of 200 rows x 64 inputs x 100 units are above the size from which a
    # dense stochastic fit trains by the kernel's team step, the batch cut into row blocks
    # (nnfast._training.threads.TEAM_MIN_FLOPS); with sample weights and L2.
    from nnfast._training import threads
    from nnfast._training.backends import backend_named

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    weights = np.random.RandomState(0).uniform(0.5, 2.0, len(y))
    params = dict(solver=solver, max_iter=5, random_state=0, alpha=1e-3)
    ours = MLPClassifier(n_threads=2, **params)
    theirs = neural_network.MLPClassifier(**params)
    backend = backend_named(mlp_backend)
    blocks = threads.kernel_blocks(types.SimpleNamespace(n_threads=2, sizes=[64, 100, 10]),
                                   backend, 200, team_step=True)
    assert blocks == (min(2, threads.available_cores()) if backend.threaded else 1)
    for model in (ours, theirs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y, sample_weight=weights)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


# ------------------------------------------------------ scikit-learn's packed vector (L-BFGS)

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hidden", [(), (5,), (5, 4)])
def test_packed_layout_is_scikit_learns_pack(hidden, bias, dtype):
    from sklearn.neural_network._multilayer_perceptron import _pack

    sizes = [3, *hidden, 2]
    net = Network(sizes, dtype=dtype, bias=bias, seed=3)
    layout = PackedLayout(sizes, bias)
    packed = layout.pack(net.params)
    assert packed.dtype == np.float64 and layout.size == net.params.size
    assert_array_equal(packed, _pack(net.weights, net.biases if bias else []))
    # And back: unpack writes each block where param_views reads it; split gives views of
    # the packed vector shaped as scikit-learn's coefs_ and intercepts_.
    moved = np.random.RandomState(0).normal(size=layout.size)
    params = np.empty_like(net.params)
    layout.unpack(moved, params)
    weights, biases = layout.split(moved)
    assert_array_equal(_pack(weights, biases if bias else []), moved)
    assert (biases is None) == (not bias)
    for ours, theirs in zip(param_views(params, sizes, bias), (weights, biases)):
        for a, b in zip(ours or [], theirs or []):
            assert a.dtype == dtype and a.shape == b.shape
            assert_array_equal(a, b.astype(dtype))
    assert_array_equal(layout.pack(params), moved.astype(dtype))


def test_packed_layout_rejects_vectors_of_another_shape():
    layout = PackedLayout([3, 5, 2], True)
    params = np.zeros(layout.size)
    for bad in (np.zeros(layout.size + 1), np.zeros(layout.size - 1),
                np.zeros((1, layout.size)), [0.0] * layout.size):
        for move in (lambda: layout.unpack(bad, params), lambda: layout.split(bad)):
            with pytest.raises(ValueError, match=f"1-D array of {layout.size} values"):
                move()
    assert_array_equal(params, 0)


# ----------------------------------------------------- default parameters on real datasets


def _digits_subset(return_X_y=True):
    X, y = load_digits(return_X_y=return_X_y)
    return X[:600], y[:600]


@pytest.mark.parametrize("dataset", ["iris", "wine", "breast_cancer", "digits", "diabetes",
                                     "friedman1"])
def test_default_cross_validated_scores_match(dataset):
    # On the compiled backend users get (the NumPy one is held to the same fits above).
    if dataset in ("diabetes", "friedman1"):
        X, y = (load_diabetes(return_X_y=True) if dataset == "diabetes" else
                make_friedman1(n_samples=400, n_features=8, noise=0.3, random_state=0))
        ours, theirs, cv = MLPRegressor, neural_network.MLPRegressor, KFold(3)
    else:
        load = {"iris": load_iris, "wine": load_wine, "breast_cancer": load_breast_cancer,
                "digits": _digits_subset}[dataset]
        X, y = load(return_X_y=True)
        ours, theirs, cv = MLPClassifier, neural_network.MLPClassifier, StratifiedKFold(3)
    scores = {}
    # One thread each: these small products gain nothing from more, and on a machine busy
    # with other work spinning thread pools make the fits many times slower.
    with threadpool_limits(1):
        for Model, extra in ((ours, {"n_threads": 1}), (theirs, {})):
            scores[Model] = cross_val_score(
                make_pipeline(StandardScaler(), Model(random_state=0, **extra)), X, y, cv=cv)
    spread = max(scores[theirs].std(), 0.01)
    assert abs(scores[ours].mean() - scores[theirs].mean()) <= spread, scores


# ------------------------------------------- scikit-learn's behaviour at the edges (issue 15)


def _edge_data(n_rows=60, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_rows, 4))
    return X, (X[:, 0] + 0.5 * rng.normal(size=n_rows) > 0).astype(int)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("first", ["partial_fit", "fit"])
def test_adaptive_rate_cut_on_the_last_epoch_is_kept(first, seed, mlp_backend):
    # tol=1 stalls every epoch: the rate is divided at the end of each call, the last epoch
    # of the call included, and the next partial_fit must go on at the divided rate.
    X, y = _edge_data(seed=seed)
    params = dict(hidden_layer_sizes=(5,), solver="sgd", learning_rate="adaptive", tol=1.0,
                  n_iter_no_change=1, random_state=0, max_iter=4)
    ours, theirs = MLPClassifier(**params), neural_network.MLPClassifier(**params)
    for model in (ours, theirs):
        if first == "fit":
            model.fit(X, y)
        for _ in range(5):
            model.partial_fit(X, y, classes=[0, 1])
    assert theirs._optimizer.learning_rate < params.get("learning_rate_init", 0.001)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


def _message_cases():
    """{case: function(Estimator) -> the estimator after a sequence ending in the call whose
    error or warning is compared}."""
    X, y = _edge_data()
    y3 = np.arange(len(X)) % 3
    quiet = dict(hidden_layer_sizes=(5,), max_iter=2, random_state=0)

    def warm_start_other_classes(Model):
        model = Model(**quiet, warm_start=True)
        model.fit(X, y)
        return model.fit(X, y3)

    def partial_fit_warm_start_missing_class(Model):
        model = Model(**quiet, warm_start=True)
        model.partial_fit(X, y3, classes=[0, 1, 2])
        return model.partial_fit(X[y3 < 2], y3[y3 < 2])

    def partial_fit_unseen_class(Model):
        model = Model(**quiet)
        model.partial_fit(X, y, classes=[0, 1])
        return model.partial_fit(X, y3)

    def partial_fit_changed_classes(Model):
        model = Model(**quiet)
        model.partial_fit(X, y, classes=[0, 1])
        return model.partial_fit(X, y, classes=[0, 1, 2])

    def partial_fit_changed_classes_array(Model):
        model = Model(**quiet)
        model.partial_fit(X, y, classes=np.array([0, 1]))
        return model.partial_fit(X, y, classes=np.array([1, 2]))

    def partial_fit_no_classes(Model):
        return Model(**quiet).partial_fit(X, y)

    def batch_size_clipped(Model):
        return Model(**quiet, batch_size=100).fit(X, y)

    def validation_set_too_small(Model):
        # One class: no stratum stops the split from holding out a single row.
        return Model(**quiet, early_stopping=True).fit(X[:8], np.zeros(8, dtype=int))

    return {f.__name__: f for f in (
        warm_start_other_classes, partial_fit_warm_start_missing_class,
        partial_fit_unseen_class, partial_fit_changed_classes,
        partial_fit_changed_classes_array, partial_fit_no_classes, batch_size_clipped,
        validation_set_too_small)}


@pytest.mark.parametrize("case", list(_message_cases()))
def test_errors_and_warnings_are_scikit_learns(case, mlp_backend):
    function = _message_cases()[case]
    ours = _outcome(function, MLPClassifier)
    theirs = _outcome(function, neural_network.MLPClassifier)
    assert ours == theirs
    assert theirs[0] != "ok" or any(w[0] is UserWarning for w in theirs[-1])


def _assert_same_outcome(function):
    """function(module) fits scikit-learn's or nnfast's estimators (module ``neural_network``
    or a namespace of nnfast's): the same exception (class, message) and warnings, or the
    same fitted model, weights and records (NaN where scikit-learn has NaN)."""
    ours_module = types.SimpleNamespace(MLPClassifier=MLPClassifier, MLPRegressor=MLPRegressor)
    results = []
    for module in (ours_module, neural_network):
        models = []
        results.append(_outcome(lambda: models.append(function(module))) + (models,))
    (*ours, ours_models), (*theirs, theirs_models) = results
    assert ours == theirs
    for a, b in zip(ours_models, theirs_models):
        assert_same_mlp(*map(_losses_not_finite_as_nan, (a, b)), MLP_RTOL[np.float64])
    return theirs[0], (theirs_models or [None])[0]


def _losses_not_finite_as_nan(model):
    """The model's attributes, with its losses that are not finite NaN: a loss that
    overflows may be inf in one and NaN in the other (docs, "Differences from
    scikit-learn"); which epochs it is, is compared."""
    attributes = dict(vars(model))
    if attributes.get("loss_curve_") is not None:
        attributes["loss_curve_"] = [x if np.isfinite(x) else np.nan
                                     for x in attributes["loss_curve_"]]
    if attributes.get("loss_") is not None and not np.isfinite(attributes["loss_"]):
        attributes["loss_"] = np.nan
    return types.SimpleNamespace(**attributes)


def _regression(n_rows=60):
    X, _ = _edge_data(n_rows)
    return X, X @ np.random.RandomState(5).normal(size=4)


DIVERGING = {
    # The weights overflow after a few epochs: NaN validation scores (the regressor's
    # predictions are not finite), the best epoch's weights kept, every epoch run.
    "regressor": lambda m: m.MLPRegressor(
        hidden_layer_sizes=(5,), max_iter=8, random_state=0, solver="sgd",
        learning_rate_init=1e3, early_stopping=True).fit(_regression()[0],
                                                         _regression()[1] * 1e3),
    "regressor-adam-stalls": lambda m: m.MLPRegressor(
        hidden_layer_sizes=(5,), max_iter=30, random_state=0, learning_rate_init=1e5,
        early_stopping=True, n_iter_no_change=2).fit(_regression()[0],
                                                     _regression()[1] * 1e5),
    # A classifier's held-out predictions are labels, decoded from non-finite outputs too:
    # its scores stay numbers (scikit-learn's accident, kept).
    "classifier": lambda m: m.MLPClassifier(
        hidden_layer_sizes=(5,), max_iter=8, random_state=0, solver="sgd",
        learning_rate_init=1e4, early_stopping=True).fit(_edge_data()[0] * 1e3,
                                                         _edge_data()[1]),
    # Weights that jump to infinity: the outputs are NaN, which decode to the first class;
    # with random_state=0 that beats the first epoch's score, and the "best" weights are
    # not finite (scikit-learn's ValueError); with 1 it does not (the first epoch's kept).
    "classifier-nan-best": lambda m: m.MLPClassifier(
        hidden_layer_sizes=(5,), max_iter=6, random_state=0, solver="sgd",
        learning_rate_init=1e300, early_stopping=True).fit(*_edge_data()),
    "classifier-nan": lambda m: m.MLPClassifier(
        hidden_layer_sizes=(5,), max_iter=6, random_state=1, solver="sgd",
        learning_rate_init=1e300, early_stopping=True).fit(*_edge_data()),
}


@pytest.mark.parametrize("case", list(DIVERGING))
def test_divergence_under_early_stopping_keeps_the_best_epoch(case, mlp_backend):
    result, theirs = _assert_same_outcome(DIVERGING[case])
    if case == "regressor":
        assert result == "ok" and np.isnan(theirs.validation_scores_[-1])


def test_warm_started_early_stopping_that_never_beats_the_stored_best(mlp_backend):
    # scikit-learn's early stopping leaves _best_coefs and coefs_ one list, which the next
    # warm-started fit trains in place: when it never beats the stored best score, it
    # returns its own last weights. An L-BFGS fit in between keeps that so (it assigns the
    # list's items).
    X, y = _regression(200)

    def fits(module, between):
        model = module.MLPRegressor(hidden_layer_sizes=(5,), max_iter=30, random_state=0,
                                    early_stopping=True, learning_rate_init=0.05,
                                    warm_start=True)
        model.fit(X, y)
        if between:
            model.set_params(solver="lbfgs", max_iter=2).fit(X, y)
            model.set_params(solver="adam")
        model.set_params(early_stopping=True, learning_rate_init=2.0, max_iter=3).fit(X, y)
        return model

    for between in (False, True):
        _, theirs = _assert_same_outcome(lambda m: fits(m, between))
        assert max(theirs.validation_scores_[-3:]) < theirs.best_validation_score_


def test_sample_weights_summing_to_zero_are_scikit_learns_errors(mlp_backend):
    X, y = _regression()
    weights = np.r_[np.zeros(20), np.ones(40)]
    cases = {
        "stored-order-batch": (dict(batch_size=20, shuffle=False), weights),
        "shuffled-batch": (dict(batch_size=2, max_iter=30), weights),
        "negative-weights": (dict(batch_size=2, shuffle=False), np.tile([1.0, -1.0], 30)),
        "validation-split": (dict(early_stopping=True), None),
    }
    for case, (params, sample_weight) in cases.items():
        params = {"hidden_layer_sizes": (5,), "max_iter": 3, "random_state": 0, **params}
        for Model in (MLPRegressor, MLPClassifier):
            target = y if Model is MLPRegressor else (y > 0).astype(int)
            if case == "validation-split":
                # Weight zero on the rows the split holds out: the split draws from the
                # random state after the initial weights (two uniform draws per layer).
                random_state = np.random.RandomState(0)
                for fan_in, fan_out in [(4, 5), (5, 1)]:
                    random_state.uniform(size=(fan_in, fan_out))
                    random_state.uniform(size=fan_out)
                _, held_out = train_test_split(
                    np.arange(60), random_state=random_state, test_size=0.1,
                    stratify=None if Model is MLPRegressor else target)
                sample_weight = np.ones(60)
                sample_weight[held_out] = 0
            before = Model(**params)
            result, _ = _assert_same_outcome(
                lambda m: getattr(m, Model.__name__)(**params).fit(X, target,
                                                                    sample_weight=sample_weight))
            assert result != "ok"
            # nnfast's fits are transactional: nothing was set.
            before_state = dict(vars(before))
            with pytest.raises(result):
                before.fit(X, target, sample_weight=sample_weight)
            assert vars(before) == before_state


NON_FINITE_LOSS = {
    # The squared error of targets near 1e200 overflows; the steps (rate 1e-300) do not.
    "inf-loss": lambda m: m.MLPRegressor(
        hidden_layer_sizes=(5,), max_iter=1, random_state=0, solver="sgd",
        learning_rate_init=1e-300).fit(_regression()[0], _regression()[1] * 1e200),
    "inf-loss-stalls": lambda m: m.MLPRegressor(
        hidden_layer_sizes=(5,), max_iter=10, random_state=0, solver="sgd",
        learning_rate_init=1e-300, n_iter_no_change=2).fit(_regression()[0],
                                                            _regression()[1] * 1e200),
    "poisson-negative-targets": lambda m: m.MLPRegressor(
        loss="poisson", hidden_layer_sizes=(5,), max_iter=4, random_state=0).fit(
            *_regression()),
    # Weights that overflow without early stopping: scikit-learn's ValueError, after its
    # ConvergenceWarning.
    "weights-overflow": lambda m: m.MLPRegressor(
        hidden_layer_sizes=(5,), max_iter=8, random_state=0, solver="sgd",
        learning_rate_init=1e3).fit(_regression()[0], _regression()[1] * 1e3),
    "partial-fit-inf-loss": lambda m: m.MLPRegressor(
        hidden_layer_sizes=(5,), random_state=0, solver="sgd",
        learning_rate_init=1e-300).partial_fit(_regression()[0], _regression()[1] * 1e200),
}


@pytest.mark.parametrize("case", list(NON_FINITE_LOSS))
def test_non_finite_losses_are_scikit_learns(case, mlp_backend):
    _, theirs = _assert_same_outcome(NON_FINITE_LOSS[case])
    if case == "inf-loss":
        assert theirs.loss_curve_ == [np.inf]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("data", ["bad", "good"])
def test_partial_fit_with_early_stopping_checks_the_data_first(data, mlp_backend):
    X, y = _edge_data()
    if data == "bad":
        y = np.full(len(X), np.nan)
    outcomes = [_outcome(lambda: Model(early_stopping=True).partial_fit(X, y, classes=[0, 1]))
                for Model in (MLPClassifier, neural_network.MLPClassifier)]
    assert outcomes[0] == outcomes[1]
    # scikit-learn refuses after its first partial_fit has set up the estimator; nnfast's
    # refusal leaves it as it was (transactional fits).
    model = MLPClassifier(early_stopping=True)
    with pytest.raises(ValueError):
        model.partial_fit(X, y, classes=[0, 1])
    assert not hasattr(model, "coefs_") and not hasattr(model, "classes_")


def _assign_weights(model, X, n_outputs, out_activation, dtype=np.float64):
    """Weights and bookkeeping assigned by hand to a never-fitted estimator, as
    scikit-learn's own test_fit does: the attributes its partial_fit needs."""
    rng = np.random.RandomState(7)
    sizes = [X.shape[1], 3, n_outputs]
    model.coefs_ = [rng.normal(size=(a, b)).astype(dtype) for a, b in zip(sizes, sizes[1:])]
    model.intercepts_ = [rng.normal(size=b).astype(dtype) for b in sizes[1:]]
    model.n_outputs_ = n_outputs
    model.n_features_in_ = X.shape[1]
    model.n_iter_ = 0
    model.n_layers_ = len(sizes)
    model.out_activation_ = out_activation
    model.t_ = 0
    model.best_loss_ = np.inf
    model.loss_curve_ = []
    model._no_improvement_count = 0
    return model


@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
@pytest.mark.parametrize("task, solver", [("binary", "sgd"), ("multiclass", "adam"),
                                          ("regression", "sgd"), ("regression", "lbfgs")])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_training_starts_from_weights_assigned_by_hand(task, solver, how, dtype,
                                                       mlp_backend):
    if how == "partial_fit" and solver == "lbfgs":
        solver = "adam"
    X, y = _data(task, dtype)
    out = {"binary": "logistic", "multiclass": "softmax", "regression": "identity"}[task]
    n_outputs = 3 if task == "multiclass" else 1
    params = dict(hidden_layer_sizes=(3,), solver=solver, max_iter=4, random_state=0,
                  learning_rate_init=0.05, warm_start=how == "warm_start")
    ours, theirs = _pair(task, **params)
    for model in (ours, theirs):
        _assign_weights(model, X, n_outputs, out, dtype)
        classes = ({"classes": np.unique(y)} if task != "regression" else {})
        if how == "partial_fit":
            model.partial_fit(X, y, **classes)
            model.partial_fit(X[::-1], y[::-1])
        else:
            model.fit(X, y)
    # (scikit-learn's L-BFGS computes in float64 whatever the weights' dtype.)
    rtol = MLP_RTOL[np.float32 if dtype == np.float32 and solver != "lbfgs" else np.float64]
    if dtype == np.float32 and solver == "lbfgs":
        rtol = MLP_RTOL[np.float32]
    assert_same_mlp(ours, theirs, rtol)
    if task == "regression":
        assert_allclose(ours.predict(X), theirs.predict(X), rtol=rtol, atol=rtol)
    else:
        assert_array_equal(ours.predict(X), theirs.predict(X))


def test_a_failed_fit_changes_nothing_where_scikit_learn_keeps_partial_state(mlp_backend):
    # docs, "Differences from scikit-learn": nnfast's failed fits leave the estimator and a
    # RandomState given as random_state as they were; scikit-learn's keep what they set up
    # and drew before the error (here its ZeroDivisionError, raised by both).
    X, y = _regression()
    weights = np.r_[np.zeros(20), np.ones(40)]
    states = {}
    for Model in (MLPRegressor, neural_network.MLPRegressor):
        random_state = np.random.RandomState(3)
        model = Model(hidden_layer_sizes=(5,), random_state=random_state, batch_size=20,
                      shuffle=False, max_iter=3)
        with pytest.raises(ZeroDivisionError, match="Weights sum to zero"):
            model.fit(X, y, sample_weight=weights)
        states[Model] = (random_state.randint(1 << 30, size=3), hasattr(model, "coefs_"))
    untouched = np.random.RandomState(3).randint(1 << 30, size=3)
    assert_array_equal(states[MLPRegressor][0], untouched) and not states[MLPRegressor][1]
    theirs = states[neural_network.MLPRegressor]
    assert not np.array_equal(theirs[0], untouched) and theirs[1]


@pytest.mark.parametrize("switch", [
    ("lbfgs", {"solver": "adam"}, AttributeError),
    ("adam", {"early_stopping": True}, AttributeError),
    ("adam-early-stopping", {"early_stopping": False}, TypeError),
])
def test_warm_started_switches_continue_where_scikit_learn_raises(switch, mlp_backend):
    # docs, "Differences from scikit-learn": scikit-learn's records of the other solver or
    # stopping mode are missing, and it raises; nnfast continues from the weights.
    first, change, error = switch
    X, y = _edge_data()
    params = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0, warm_start=True,
                  solver=first.split("-")[0], early_stopping=first.endswith("stopping"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = neural_network.MLPClassifier(**params).fit(X, y)
        with pytest.raises(error):
            theirs.set_params(**change).fit(X, y)
        ours = MLPClassifier(**params).fit(X, y)
        start = [c.copy() for c in ours.coefs_]
        ours.set_params(**change).fit(X, y)
    assert ours.n_iter_ == 3 and not all(np.array_equal(a, b)
                                         for a, b in zip(start, ours.coefs_))


def test_warm_start_with_other_layer_sizes_is_a_value_error(mlp_backend):
    # scikit-learn's L-BFGS-B crashes the process here (heap corruption), so only nnfast's
    # side runs: a ValueError naming the shapes, the estimator unchanged.
    X, y = _edge_data()
    model = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, solver="lbfgs",
                          warm_start=True, random_state=0).fit(X, y)
    coefs = model.coefs_
    with pytest.raises(ValueError, match=r"coefs_\[0\] must have shape \(4, 6\)"):
        model.set_params(hidden_layer_sizes=(6,)).fit(X, y)
    assert model.coefs_ is coefs


def test_missing_records_of_hand_assigned_weights_start_empty(mlp_backend):
    # docs, "Differences from scikit-learn": with only the weights and the output set,
    # scikit-learn's partial_fit raises AttributeError for the records it reads; nnfast's
    # starts them, and trains as scikit-learn does once they are set.
    X, y = _data("regression")
    fitted = {}
    for Model in (MLPRegressor, neural_network.MLPRegressor):
        model = _assign_weights(Model(hidden_layer_sizes=(3,), random_state=0), X, 1,
                                "identity")
        for name in ("t_", "loss_curve_", "best_loss_", "_no_improvement_count", "n_iter_",
                     "n_layers_"):
            delattr(model, name)
        if Model is neural_network.MLPRegressor:
            with pytest.raises(AttributeError):
                model.partial_fit(X, y)
            model = _assign_weights(Model(hidden_layer_sizes=(3,), random_state=0), X, 1,
                                    "identity")
        fitted[Model] = model.partial_fit(X, y)
    assert_same_mlp(fitted[MLPRegressor], fitted[neural_network.MLPRegressor],
                    MLP_RTOL[np.float64])


def test_warnings_point_at_the_caller():
    X, y = _data("regression")
    for Model, expected in ((MLPRegressor, __file__),
                            (neural_network.MLPRegressor, neural_network.__file__)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Model(batch_size=80, max_iter=1).fit(X, y)
        clipped = [w for w in caught if "clipped" in str(w.message)]
        assert len(clipped) == 1
        assert os.path.dirname(clipped[0].filename) == os.path.dirname(expected)
