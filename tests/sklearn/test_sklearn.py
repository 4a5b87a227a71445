"""The scikit-learn estimators of ``nnfast.sklearn``: scikit-learn's own estimator checks
(every estimator), pickling and parameter validation of ``MLPClassifier`` / ``MLPRegressor``
(their fits against scikit-learn's are in test_mlp_equivalence.py), and for
``NetworkClassifier`` / ``NetworkRegressor``:
accuracy with default parameters on scikit-learn's small real datasets, model selection,
dtypes, reproducibility, the training loop's bookkeeping, and ``import nnfast`` without
scikit-learn.

The accuracy thresholds are the ones a first fit with default parameters must reach; the
measured values (the split and random_state=0 below) sit well above them: iris 0.974,
breast cancer 0.965, digits 0.976, diabetes R^2 0.356 (a linear model: 0.358),
make_regression R^2 0.995. Over random_state 0-9 the least were 0.947, 0.965, 0.976, 0.346
and 0.993.
"""

import pathlib
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import neural_network
from sklearn.base import clone
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits, load_iris,
                              make_regression)
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import nnfast
from nnfast.sklearn import MLPClassifier, MLPRegressor, NetworkClassifier, NetworkRegressor

ESTIMATORS = [NetworkClassifier, NetworkRegressor]

# Most fits below are deliberately short or on data that does not converge within max_iter;
# the warning is tested on its own in test_max_iter_reached_warns.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def iris_split():
    X, y = load_iris(return_X_y=True)
    return train_test_split(X, y, random_state=0, stratify=y)


def _blobs(n_classes=3, n_rows=60, dtype=np.float64):
    """Well-separated standardised clusters: easy for any working classifier."""
    rng = np.random.RandomState(0)
    labels = np.arange(n_rows) % n_classes
    X = rng.normal(size=(n_rows, 4)) * 0.3 + np.eye(n_classes, 4)[labels] * 3
    return ((X - X.mean(0)) / X.std(0)).astype(dtype), labels


# ------------------------------------------------------------------- scikit-learn's checks


@parametrize_with_checks([NetworkClassifier(), NetworkRegressor(),
                          NetworkClassifier(early_stopping=True),
                          NetworkRegressor(early_stopping=True)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
                          MLPClassifier(solver="lbfgs", max_iter=100),
                          MLPRegressor(solver="sgd", activation="tanh", max_iter=100)])
def test_mlp_estimator_checks(estimator, check):
    # On the compiled backend users get; test_mlp_equivalence.py holds both backends to
    # scikit-learn's fits.
    check(estimator)


# ------------------------------------------------------ MLP: pickling and validation


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_mlp_pickles_with_its_optimizer_state(Estimator, mlp_backend):
    X, y = _blobs()
    target = y if Estimator is MLPClassifier else X[:, 0]
    kwargs = {"classes": np.unique(y)} if Estimator is MLPClassifier else {}
    model = Estimator(hidden_layer_sizes=(5,), random_state=0).partial_fit(X, target, **kwargs)
    copy = pickle.loads(pickle.dumps(model))
    assert_array_equal(copy.predict(X), model.predict(X))
    # The copy continues as the original does: same weights and optimizer state.
    model.partial_fit(X, target)
    copy.partial_fit(X, target)
    for a, b in zip(model.coefs_ + model.intercepts_, copy.coefs_ + copy.intercepts_):
        assert_array_equal(a, b)


@pytest.mark.parametrize("params", [
    {"hidden_layer_sizes": (10, 0)},
    {"hidden_layer_sizes": "10"},
    # (activation: nnfast lists more options; test_mlp_params.py and test_mlp_activations.py)
    {"solver": "newton"},
    {"alpha": -1.0},
    {"batch_size": 0},
    {"batch_size": "big"},
    {"learning_rate_init": 0.0},
    {"power_t": -0.5},
    {"max_iter": 0},
    {"shuffle": "yes"},
    {"tol": -1.0},
    {"momentum": 1.5},
    {"nesterovs_momentum": 1},
    {"early_stopping": True, "validation_fraction": 1.0},
    {"early_stopping": True, "validation_fraction": 0.0},
    {"beta_1": 1.0},
    {"beta_2": -0.1},
    {"epsilon": 0.0},
    {"n_iter_no_change": 0},
    {"max_fun": 0},
])
def test_mlp_bad_parameters_fail_at_fit_as_scikit_learns(params):
    """scikit-learn's exception and message (every value and type: test_mlp_params.py)."""
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    X, y = _blobs()
    model = MLPClassifier(**params)  # never at construction, as scikit-learn requires
    with pytest.raises(ValueError) as ours:
        model.fit(X, y)
    with pytest.raises(ValueError) as theirs:
        SkMLPClassifier(**params).fit(X, y)
    assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))
    assert not hasattr(model, "coefs_")


@pytest.mark.parametrize("params, match", [
    ({"n_threads": 0}, "The 'n_threads' parameter of MLPClassifier must be"),
    ({"class_weight": "even"}, "The 'class_weight' parameter of MLPClassifier must be"),
    ({"class_weight": {7: 2.0}}, "class_weight has labels that are not classes"),
    # learning_rate's options are scikit-learn's and nnfast's "cosine"
    # (tests/sklearn/test_mlp_params.py holds the message to scikit-learn's validation).
    ({"learning_rate": "fast"}, "The 'learning_rate' parameter of MLPClassifier must be"),
    ({"warmup_fraction": 1.0}, "The 'warmup_fraction' parameter of MLPClassifier must be"),
    ({"max_grad_norm": 0.0}, "The 'max_grad_norm' parameter of MLPClassifier must be"),
])
def test_mlp_bad_nnfast_parameters_fail_at_fit_with_the_name(params, match):
    X, y = _blobs()
    model = MLPClassifier(**params)
    with pytest.raises(ValueError, match=match):
        model.fit(X, y)
    assert not hasattr(model, "coefs_")


@pytest.mark.parametrize("sample_weight", [np.ones(5), np.zeros(60), np.full(60, np.nan),
                                           np.ones((60, 1)), np.array(["a"] * 60)])
def test_mlp_bad_sample_weight_is_scikit_learns_error(sample_weight):
    X, y = _blobs()
    errors = []
    for Model in (MLPClassifier, neural_network.MLPClassifier):
        with pytest.raises((ValueError, TypeError)) as caught:
            Model().fit(X, y, sample_weight=sample_weight)
        errors.append((type(caught.value), str(caught.value)))
    assert errors[0] == errors[1]


def test_mlp_takes_what_scikit_learn_takes():
    # Negative sample weights, and negative targets for the Poisson loss (a NaN loss, finite
    # weights): scikit-learn's MLP fits them, and so does nnfast's, to the same weights.
    X, y = _blobs()
    weights = np.random.RandomState(0).uniform(-0.2, 1, size=len(X))
    cases = [(MLPClassifier, neural_network.MLPClassifier, {}, y, weights),
             (MLPRegressor, neural_network.MLPRegressor, {"loss": "poisson"}, X[:, 0], None)]
    for Ours, Theirs, extra, target, sample_weight in cases:
        params = dict(hidden_layer_sizes=(4,), max_iter=3, random_state=0, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = Ours(**params).fit(X, target, sample_weight=sample_weight)
            theirs = Theirs(**params).fit(X, target, sample_weight=sample_weight)
        assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
            assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_mlp_regressor_checks_its_loss():
    X, _ = _blobs()
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="absolute").fit(X, X[:, 0])


def test_mlp_partial_fit_rules():
    X, y = _blobs()
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, y)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="balanced"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPRegressor(solver="lbfgs").partial_fit
    model = MLPClassifier(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="not in"):
        model.partial_fit(X, y + 1)


def test_mlp_warm_start_refuses_weights_that_do_not_fit(mlp_backend):
    X, y = _blobs()
    model = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, warm_start=True).fit(X, y)
    model.coefs_[0] = np.zeros((4, 6))
    before = [c.copy() for c in model.coefs_]
    with pytest.raises(ValueError, match=r"coefs_\[0\] must have shape \(4, 5\)"):
        model.fit(X, y)
    for a, b in zip(model.coefs_, before):
        assert_array_equal(a, b)


def test_mlp_interrupted_fit_leaves_the_estimator_as_it_was(monkeypatch, mlp_backend):
    X, y = _blobs()
    model = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    before = pickle.dumps(model)
    calls = []

    def interrupt(self, *args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    # Where the estimators' epochs run (nnfast._training.run.training_run's run).
    monkeypatch.setattr(nnfast._training.run.TrainingRun, "run", interrupt)
    for attempt in (lambda: model.fit(X[:30], y[:30]), lambda: model.partial_fit(X, y)):
        with pytest.raises(KeyboardInterrupt):
            attempt()
        assert pickle.dumps(model) == before
    assert len(calls) == 2


def test_mlp_lbfgs_interrupted_mid_fit_leaves_the_estimator_and_blas_as_they_were(
        monkeypatch, mlp_backend):
    from threadpoolctl import threadpool_info

    from nnfast._training.objective import FullBatchObjective

    def blas_threads():
        return [info["num_threads"] for info in threadpool_info()
                if info["user_api"] == "blas"]

    X, y = _blobs()
    model = MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs", max_iter=5, tol=0.0,
                          warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    before = pickle.dumps(model)
    blas_before = blas_threads()
    evaluate = FullBatchObjective.__call__
    during = []

    def interrupt_at_the_fourth(self):
        during.append(blas_threads())
        if len(during) == 4:  # after L-BFGS has moved the weights three times
            raise KeyboardInterrupt
        return evaluate(self)

    monkeypatch.setattr(FullBatchObjective, "__call__", interrupt_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y)
    assert len(during) == 4
    assert pickle.dumps(model) == before
    # BLAS runs on one thread around the whole minimization (SciPy's L-BFGS-B and the
    # evaluations), and gets its own setting back when the fit is interrupted.
    assert all(threads == [1] * len(blas_before) for threads in during)
    assert blas_threads() == blas_before


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_mlp_leaves_the_callers_arrays_alone(solver, mlp_backend):
    X, y = _blobs()
    weights = np.linspace(0.5, 1.5, len(y))
    copies = [X.copy(), y.copy(), weights.copy()]
    model = MLPClassifier(hidden_layer_sizes=(4,), solver=solver, max_iter=3,
                          early_stopping=solver == "adam", class_weight="balanced")
    model.fit(X, y, sample_weight=weights)
    model.predict_proba(X)
    for given, copy in zip((X, y, weights), copies):
        assert_array_equal(given, copy)


def test_mlp_divergence_is_scikit_learns_error(mlp_backend):
    X, _ = _blobs()
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        MLPRegressor(solver="sgd", learning_rate_init=1e6, max_iter=20,
                     random_state=0).fit(X, 1e6 * X[:, 0])


# ------------------------------------------------ default parameters on real, scaled data


@pytest.mark.parametrize("loader, threshold", [
    (load_iris, 0.9),
    (load_breast_cancer, 0.93),
    (load_digits, 0.9),
], ids=["iris", "breast_cancer", "digits"])
def test_classifier_defaults_on_real_datasets(loader, threshold):
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), NetworkClassifier(random_state=0))
    model.fit(X_train, y_train)
    assert model.score(X_test, y_test) >= threshold


@pytest.mark.parametrize("dataset, threshold", [
    ("diabetes", 0.3),
    ("make_regression", 0.9),
    ("make_regression_3_targets", 0.9),
])
def test_regressor_defaults_on_real_datasets(dataset, threshold):
    if dataset == "diabetes":
        # A linear model reaches R^2 = 0.36 on this split.
        X, y = load_diabetes(return_X_y=True)
    else:
        n_targets = 3 if dataset.endswith("3_targets") else 1
        X, y = make_regression(n_samples=300, n_features=10, n_targets=n_targets, noise=10,
                               random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = make_pipeline(StandardScaler(), NetworkRegressor(random_state=0))
    model.fit(X_train, y_train)
    assert model.predict(X_test).shape == y_test.shape
    assert model.score(X_test, y_test) > threshold


def test_auto_learning_rate_keeps_a_wide_layer_stable():
    # With the 100-unit rate a 400-unit layer makes the output layer's steps diverge
    # (R^2 far below 0); "auto" scales the rate down with the width.
    X, y = make_regression(n_samples=300, n_features=10, noise=10, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = NetworkRegressor(hidden_layer_sizes=(400,), random_state=0).fit(X_train, y_train)
    assert model.score(X_test, y_test) > 0.8


def test_grid_search_runs_and_picks_a_working_setting(iris_split):
    X_train, X_test, y_train, y_test = iris_split
    pipeline = make_pipeline(StandardScaler(), NetworkClassifier(random_state=0))
    grid = GridSearchCV(pipeline, {
        "networkclassifier__learning_rate": [1e-3, 1.0],  # 1e-3 barely moves in 200 epochs
        "networkclassifier__hidden_layer_sizes": [(10,), (30,)],
    }, cv=3)
    grid.fit(X_train, y_train)
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_params_["networkclassifier__learning_rate"] == 1.0
    assert grid.best_score_ > 0.9
    assert grid.score(X_test, y_test) > 0.9


# --------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_dtype_is_the_network_dtype(dtype):
    X, y = _blobs(dtype=dtype)
    classifier = NetworkClassifier(max_iter=5, random_state=0).fit(X, y)
    assert classifier.network_.dtype == dtype
    assert all(w.dtype == dtype for w in classifier.coefs_)
    assert classifier.predict_proba(X).dtype == dtype
    regressor = NetworkRegressor(max_iter=5, random_state=0).fit(X, X[:, 0].astype(np.float64))
    assert regressor.network_.dtype == dtype
    assert regressor.predict(X).dtype == dtype


def test_integer_input_gives_a_float64_network():
    X, y = _blobs()
    classifier = NetworkClassifier(max_iter=5, random_state=0).fit((X * 10).astype(int), y)
    assert classifier.network_.dtype == np.float64


def test_explicit_dtype_overrides_the_input_dtype():
    X, y = _blobs()
    classifier = NetworkClassifier(dtype=np.float32, max_iter=5, random_state=0).fit(X, y)
    assert classifier.network_.dtype == np.float32
    # Outputs follow the input: float64 X gives float64 probabilities.
    assert classifier.predict_proba(X).dtype == np.float64
    assert classifier.predict_proba(X.astype(np.float32)).dtype == np.float32


# ------------------------------------------------------------------------ reproducibility


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_random_state_makes_fits_reproducible(Estimator):
    X, y = _blobs()
    first = Estimator(max_iter=20, random_state=7).fit(X, y)
    second = Estimator(max_iter=20, random_state=7).fit(X, y)
    other = Estimator(max_iter=20, random_state=8).fit(X, y)
    assert first.network_.seed == 7
    assert_array_equal(first.loss_curve_, second.loss_curve_)
    for a, b in zip(first.coefs_, second.coefs_):
        assert_array_equal(a, b)
    assert_array_equal(first.predict(X), second.predict(X))
    assert not np.array_equal(first.coefs_[0], other.coefs_[0])


def test_random_state_none_or_instance_draws_a_seed():
    X, y = _blobs()
    seeds = {NetworkClassifier(max_iter=2).fit(X, y).network_.seed for _ in range(3)}
    assert len(seeds) > 1
    a = NetworkClassifier(max_iter=2, random_state=np.random.RandomState(3)).fit(X, y)
    b = NetworkClassifier(max_iter=2, random_state=np.random.RandomState(3)).fit(X, y)
    assert a.network_.seed == b.network_.seed


def test_refit_starts_afresh():
    X, y = _blobs()
    model = NetworkClassifier(max_iter=10, random_state=0)
    first = model.fit(X, y).loss_curve_
    assert model.fit(X, y).loss_curve_ == first


# ----------------------------------------------------------------- training bookkeeping


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_loss_curve_decreases_overall(Estimator, iris_split):
    X_train, _, y_train, _ = iris_split
    X_train = StandardScaler().fit_transform(X_train)
    target = y_train if Estimator is NetworkClassifier else X_train[:, 0]
    model = Estimator(random_state=0).fit(X_train, target)
    curve = np.array(model.loss_curve_)
    assert len(curve) == model.n_iter_
    assert np.isfinite(curve).all() and (curve >= 0).all()
    assert model.loss_ == curve[-1]
    assert curve[-1] < 0.5 * curve[0]
    assert curve[-10:].mean() < curve[:10].mean()


def test_max_iter_reached_warns():
    X, y = _blobs()
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        model = NetworkClassifier(max_iter=5, tol=0.0, random_state=0).fit(X, y)
    assert model.n_iter_ == 5
    assert len(model.loss_curve_) == 5


def test_stops_after_n_iter_no_change_epochs_without_progress():
    X, y = _blobs()
    # No epoch can improve the loss by 1.0: training stops after 1 + n_iter_no_change + 1.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = NetworkClassifier(tol=1.0, n_iter_no_change=3, random_state=0).fit(X, y)
    assert model.n_iter_ == 5


def test_early_stopping_keeps_the_best_validation_epoch():
    X, y = _blobs(n_rows=200)
    model = NetworkClassifier(early_stopping=True, validation_fraction=0.2,
                              random_state=0).fit(X, y)
    curve = model.validation_loss_curve_
    assert len(curve) == model.n_iter_
    assert model.best_validation_loss_ == min(curve)
    assert model.score(X, y) > 0.9
    plain = NetworkClassifier(max_iter=5, random_state=0).fit(X, y)
    assert plain.validation_loss_curve_ is None and plain.best_validation_loss_ is None


def test_divergence_names_the_estimators_learning_rate(monkeypatch):
    # Sigmoids saturate rather than overflow, so divergence is provoked directly.
    def diverge(self, *args, **kwargs):
        raise nnfast.TrainingDivergedError("training diverged (learning_rate=0.0625)")

    X, y = _blobs()
    monkeypatch.setattr(nnfast.Network, "fit", diverge)
    with pytest.raises(nnfast.TrainingDivergedError, match="in epochs 1-100; try a learning_rate below 2$"):
        NetworkClassifier(learning_rate=2.0).fit(X, y)


def test_verbose_prints_the_loss(capsys):
    X, y = _blobs()
    NetworkClassifier(max_iter=4, verbose=2, random_state=0).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["Iteration 1", "Iteration 3"]
    assert all("loss = " in line for line in lines)


# ------------------------------------------------------------------- fitted attributes


def test_fitted_attributes_describe_the_network():
    X, y = _blobs()
    model = NetworkClassifier(hidden_layer_sizes=(7, 5), max_iter=3, random_state=0)
    with pytest.raises(NotFittedError):
        model.predict(X)
    assert not hasattr(model, "coefs_")
    model.fit(X, y)
    assert model.n_features_in_ == 4
    assert model.n_outputs_ == 3
    assert list(model.network_.sizes) == [4, 7, 5, 3]
    assert [w.shape for w in model.coefs_] == [(4, 7), (7, 5), (5, 3)]
    assert [b.shape for b in model.intercepts_] == [(7,), (5,), (3,)]
    assert NetworkClassifier(bias=False, max_iter=1).fit(X, y).intercepts_ is None


def test_coefs_are_the_model():
    X, y = _blobs()
    model = NetworkClassifier(max_iter=20, random_state=0).fit(X, y)
    before = model.predict_proba(X)
    model.coefs_[-1][...] = 0
    model.intercepts_[-1][...] = 0
    assert_allclose(model.predict_proba(X), np.full_like(before, 1 / 3))


# ------------------------------------------------------------------------ classifier


def test_binary_probabilities_are_one_minus_p_and_p():
    X, y = _blobs(n_classes=2)
    labels = np.array(["no", "yes"])[y]
    model = NetworkClassifier(max_iter=30, random_state=0).fit(X, labels)
    assert model.n_outputs_ == 1
    assert_array_equal(model.classes_, ["no", "yes"])
    p = model.network_.predict(X)[:, 0]
    assert_allclose(model.predict_proba(X), np.column_stack([1 - p, p]))
    assert_array_equal(model.predict(X), np.where(p > 0.5, "yes", "no"))
    assert model.score(X, labels) == 1.0


def test_multiclass_probabilities_are_normalised_outputs():
    X, y = _blobs(n_classes=3)
    model = NetworkClassifier(max_iter=30, random_state=0).fit(X, y + 10)
    outputs = model.network_.predict(X)
    proba = model.predict_proba(X)
    assert_allclose(proba, outputs / outputs.sum(axis=1, keepdims=True))
    assert_allclose(proba.sum(axis=1), 1)
    assert_array_equal(model.predict(X), model.classes_[outputs.argmax(axis=1)])
    assert_allclose(model.predict_log_proba(X), np.log(proba))


def test_single_class_predicts_it():
    X, _ = _blobs()
    model = NetworkClassifier(max_iter=3, random_state=0).fit(X, np.full(len(X), "only"))
    assert_array_equal(model.predict(X), "only")
    assert_array_equal(model.predict_proba(X), np.ones((len(X), 1)))


# ------------------------------------------------------------------------- regressor


def test_regressor_keeps_the_shape_of_y():
    X, _ = _blobs()
    y = X[:, :1] - 2 * X[:, 1:2]
    column = NetworkRegressor(max_iter=5, random_state=0).fit(X, y)
    flat = NetworkRegressor(max_iter=5, random_state=0).fit(X, y.ravel())
    assert column.predict(X).shape == (len(X), 1)
    assert flat.predict(X).shape == (len(X),)
    assert_allclose(column.predict(X).ravel(), flat.predict(X))


def test_regressor_targets_map_onto_the_sigmoid_range_and_back():
    X, _ = _blobs()
    y = np.column_stack([1000 + 500 * X[:, 0], np.full(len(X), -3.0)])  # one constant column
    model = NetworkRegressor(random_state=0).fit(X, y)
    prediction = model.predict(X)
    assert r2_score(y[:, 0], prediction[:, 0]) > 0.9
    assert_allclose(prediction[:, 1], -3.0, atol=0.5)
    # Predictions stay within the training range widened by a third on either side.
    span = np.ptp(y[:, 0])
    assert prediction[:, 0].min() >= y[:, 0].min() - span / 3
    assert prediction[:, 0].max() <= y[:, 0].max() + span / 3


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize("params, error, match", [
    ({"learning_rate": -1.0}, ValueError, "learning_rate"),
    ({"learning_rate": "fast"}, ValueError, "learning_rate"),
    ({"hidden_layer_sizes": (10, 0)}, ValueError, r"hidden_layer_sizes\[1\]"),
    ({"hidden_layer_sizes": "10"}, TypeError, "hidden_layer_sizes"),
    ({"max_iter": 0}, ValueError, "max_iter"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"tol": -1.0}, ValueError, "tol"),
    ({"early_stopping": True, "validation_fraction": 1.0}, ValueError, "validation_fraction"),
    ({"dtype": np.int32}, ValueError, "dtype"),
    ({"bias": "yes"}, TypeError, "bias"),
])
def test_bad_parameters_fail_at_fit_with_the_name(params, error, match):
    X, y = _blobs()
    model = NetworkClassifier(**params)  # never at construction, as scikit-learn requires
    with pytest.raises(error, match=match):
        model.fit(X, y)


def test_clone_keeps_parameters_as_given():
    model = NetworkRegressor(hidden_layer_sizes=[8, 4], learning_rate=0.1, dtype="float32")
    params = clone(model).get_params()
    assert params["hidden_layer_sizes"] == [8, 4]
    assert params["learning_rate"] == 0.1 and params["dtype"] == "float32"


# --------------------------------------------------------------- optional dependency


def test_nnfast_imports_without_scikit_learn():
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None\n"  # any import of sklearn now raises ImportError
        "import nnfast\n"
        "assert 'nnfast.sklearn' not in sys.modules\n"
        "nnfast.Network([2, 1])\n"
        "try:\n"
        "    import nnfast.sklearn\n"
        "except ImportError as exc:\n"
        "    assert \"pip install 'nnfast[sklearn]'\" in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('nnfast.sklearn imported without scikit-learn')\n"
    )
    root = pathlib.Path(nnfast.__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("fitted_on, y", [
    ([0, 1, 2, 1], [2, 0, 1, 1, 0]),
    (["no", "yes"], ["yes", "no", "no"]),
    (np.array(["a", "b"], dtype=object), np.array(["b", "b", "a"], dtype=object)),
    ([True, False], [False, True, True]),
    ([0.0, 1.0, 2.0], [2.0, 0.0]),
    ([7, 7], [7, 7, 7]),
    ([3, 1, 2], [3, 3]),                                 # partial_fit: classes beyond the batch
    ([[1, 0, 1], [0, 1, 1]], [[0, 0, 1], [1, 1, 0]])])   # multilabel: the binarizer's own
def test_mlp_target_encoding_is_label_binarizers(fitted_on, y):
    from sklearn.preprocessing import LabelBinarizer

    from nnfast.sklearn._mlp import _binarize
    binarizer = LabelBinarizer().fit(np.asarray(fitted_on))
    y = np.asarray(y)
    ours = _binarize(binarizer, y)
    assert_array_equal(ours, binarizer.transform(y))
    assert ours.dtype == binarizer.transform(y).dtype
