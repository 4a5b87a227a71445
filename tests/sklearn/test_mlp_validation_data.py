"""Validation data for the MLP estimators: ``fit``'s ``X_val`` / ``y_val`` /
``sample_weight_val``, ``scoring``, ``validation_scores_``, ``validation_loss_curve_`` and
early stopping on them.

The oracle of an epoch's scores is scikit-learn: its ``MLPClassifier`` / ``MLPRegressor``
trained ``k + 1`` epochs (``max_iter=k + 1``, the same ``random_state``, which gives the
weights of epoch k + 1 of a longer fit), scored by ``sklearn.metrics`` on the validation
data. Early stopping is replayed by hand over those per-epoch scores with scikit-learn's
rule; the weights kept must be the best epoch's scikit-learn model's. Training with
validation data but without early stopping must be scikit-learn's fit without it.
"""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn.neural_network as sk
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.metrics import (
    accuracy_score,
    get_scorer,
    log_loss,
    mean_poisson_deviance,
    mean_squared_error,
    r2_score,
)

from conftest import MLP_RTOL
from nnfast.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RTOL = MLP_RTOL[np.float64]
SMALL = {"hidden_layer_sizes": (6,), "random_state": 0, "learning_rate_init": 0.05}


def _classification(n_classes=2):
    X, y = make_classification(n_samples=160, n_features=5, n_informative=3,
                               n_classes=n_classes, random_state=0)
    return X[:120], y[:120], X[120:], y[120:]


def _regression():
    X, y = make_regression(n_samples=160, n_features=5, noise=1.0, random_state=0)
    y = y / y.std()
    return X[:120], y[:120], X[120:], y[120:]


def _sklearn_epochs(Sk, params, X, y, n_epochs, sample_weight=None):
    """scikit-learn's models after 1 .. n_epochs epochs (early stopping off, never stalling)."""
    models = []
    for k in range(1, n_epochs + 1):
        model = Sk(**{**params, "max_iter": k, "early_stopping": False,
                      "n_iter_no_change": n_epochs + 1})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models.append(model.fit(X, y, sample_weight=sample_weight))
    return models


def _assert_same_training(ours, theirs):
    """The same epochs, weights and training losses as scikit-learn's fit (whose
    validation records, if any, come from its own split)."""
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert_allclose(a, b, rtol=RTOL, atol=RTOL * np.abs(b).max())
    assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=RTOL)


def _half_poisson(y, pred, sample_weight=None):
    return 0.5 * mean_poisson_deviance(y, pred, sample_weight=sample_weight)


def _half_squared(y, pred, sample_weight=None):
    return 0.5 * mean_squared_error(y, pred, sample_weight=sample_weight)


# ------------------------------------------------------------ curves against scikit-learn

@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_classifier_curves_are_each_epochs_scores(solver, n_classes, weighted):
    X, y, X_val, y_val = _classification(n_classes)
    sw_val = np.random.RandomState(1).uniform(0.5, 2.0, len(y_val)) if weighted else None
    params = {**SMALL, "solver": solver, "max_iter": 6, "n_iter_no_change": 100}
    ours = MLPClassifier(**params).fit(X, y, X_val=X_val, y_val=y_val,
                                       sample_weight_val=sw_val)
    theirs = _sklearn_epochs(sk.MLPClassifier, params, X, y, 6)
    assert len(ours.validation_scores_) == len(ours.validation_loss_curve_) == 6
    for k, model in enumerate(theirs):
        assert ours.validation_scores_[k] == pytest.approx(
            accuracy_score(y_val, model.predict(X_val), sample_weight=sw_val), abs=1e-12)
        assert_allclose(ours.validation_loss_curve_[k],
                        log_loss(y_val, model.predict_proba(X_val), sample_weight=sw_val,
                                 labels=model.classes_), rtol=1e-7)
    # Validation data without early stopping: scikit-learn's fit without it.
    _assert_same_training(ours, theirs[-1])
    assert ours.best_validation_score_ is None


@pytest.mark.parametrize("loss, loss_metric", [("squared_error", _half_squared),
                                                ("poisson", _half_poisson)])
def test_regressor_curves_are_each_epochs_scores(loss, loss_metric):
    X, y, X_val, y_val = _regression()
    if loss == "poisson":
        y, y_val = np.abs(y), np.abs(y_val)
    params = {**SMALL, "loss": loss, "max_iter": 5, "n_iter_no_change": 100}
    ours = MLPRegressor(**params).fit(X, y, X_val=X_val, y_val=y_val)
    theirs = _sklearn_epochs(sk.MLPRegressor, params, X, y, 5)
    for k, model in enumerate(theirs):
        prediction = model.predict(X_val)
        assert_allclose(ours.validation_scores_[k], r2_score(y_val, prediction), rtol=1e-7)
        assert_allclose(ours.validation_loss_curve_[k], loss_metric(y_val, prediction),
                        rtol=1e-7)
    _assert_same_training(ours, theirs[-1])


def test_scoring_by_name_and_callable_give_the_scorers_value_per_epoch():
    X, y, X_val, y_val = _classification(3)
    params = {**SMALL, "max_iter": 4, "n_iter_no_change": 100}
    theirs = _sklearn_epochs(sk.MLPClassifier, params, X, y, 4)
    expected = [get_scorer("neg_log_loss")(m, X_val, y_val) for m in theirs]
    by_name = MLPClassifier(**params, scoring="neg_log_loss").fit(X, y, X_val=X_val,
                                                                   y_val=y_val)
    assert_allclose(by_name.validation_scores_, expected, rtol=1e-7)
    # A callable sees the estimator answering with the epoch's weights.
    seen = []

    def scorer(estimator, X_score, y_score):
        seen.append(estimator.predict_proba(X_score))
        return -log_loss(y_score, seen[-1], labels=estimator.classes_)

    by_callable = MLPClassifier(**params, scoring=scorer).fit(X, y, X_val=X_val, y_val=y_val)
    assert_allclose(by_callable.validation_scores_, expected, rtol=1e-7)
    for proba, model in zip(seen, theirs):
        assert_allclose(proba, model.predict_proba(X_val), rtol=1e-7, atol=1e-12)
    # After the fit, the estimator answers with its final weights again.
    assert_allclose(by_callable.predict_proba(X_val), theirs[-1].predict_proba(X_val),
                    rtol=1e-7, atol=1e-12)


# ------------------------------------------------------------------------ early stopping

def _replay_early_stopping(scores, tol, n_iter_no_change):
    """scikit-learn's rule over per-epoch scores: (epochs run, index of the best epoch)."""
    best, best_k, count = -np.inf, None, 0
    for k, score in enumerate(scores):
        count = count + 1 if score < best + tol else 0
        if score > best:
            best, best_k = score, k
        if count > n_iter_no_change:
            return k + 1, best_k
    return len(scores), best_k


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_early_stopping_on_X_val_with_neg_log_loss_stops_where_the_scores_say(solver):
    X, y, X_val, y_val = _classification(3)
    params = {**SMALL, "solver": solver, "learning_rate_init": 0.2, "max_iter": 40,
              "tol": 1e-3, "n_iter_no_change": 3}
    theirs = _sklearn_epochs(sk.MLPClassifier, params, X, y, 40)
    scores = [get_scorer("neg_log_loss")(m, X_val, y_val) for m in theirs]
    n_epochs, best = _replay_early_stopping(scores, params["tol"],
                                            params["n_iter_no_change"])
    assert n_epochs < 40, "the case must stop early to test anything"
    ours = MLPClassifier(**params, early_stopping=True, scoring="neg_log_loss").fit(
        X, y, X_val=X_val, y_val=y_val)
    assert ours.n_iter_ == n_epochs
    assert_allclose(ours.validation_scores_, scores[:n_epochs], rtol=1e-7)
    assert ours.best_validation_score_ == pytest.approx(scores[best], rel=1e-7)
    # The weights kept are the best epoch's (all of X trained: no split).
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs[best].coefs_ + theirs[best].intercepts_):
        assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    assert ours.t_ == n_epochs * len(X)


def test_early_stopping_without_X_val_still_splits_and_records_the_loss_curve():
    X, y, _, _ = _classification(2)
    params = {**SMALL, "max_iter": 8, "early_stopping": True}
    ours = MLPClassifier(**params).fit(X, y)
    theirs = sk.MLPClassifier(**params).fit(X, y)
    _assert_same_training(ours, theirs)
    assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=RTOL)
    assert len(ours.validation_loss_curve_) == ours.n_iter_
    assert all(np.isfinite(ours.validation_loss_curve_))


def test_no_validation_data_keeps_the_curves_none():
    X, y, _, _ = _classification(2)
    model = MLPClassifier(**SMALL, max_iter=3).fit(X, y)
    assert model.validation_scores_ is None and model.validation_loss_curve_ is None


def test_warm_start_extends_the_curves():
    X, y, X_val, y_val = _classification(2)
    model = MLPClassifier(**SMALL, max_iter=3, warm_start=True)
    model.fit(X, y, X_val=X_val, y_val=y_val)
    first = list(model.validation_loss_curve_)
    model.fit(X, y, X_val=X_val, y_val=y_val)
    assert len(model.validation_loss_curve_) == len(model.validation_scores_) == 6
    assert model.validation_loss_curve_[:3] == first


def test_lbfgs_records_each_iteration():
    X, y, X_val, y_val = _classification(2)
    model = MLPClassifier(**SMALL, solver="lbfgs", max_iter=15).fit(X, y, X_val=X_val,
                                                                   y_val=y_val)
    assert len(model.validation_scores_) == len(model.validation_loss_curve_) == model.n_iter_
    # Iteration k's iterate is scikit-learn's L-BFGS fit stopped after k + 1 iterations.
    for k in range(0, model.n_iter_, 4):
        theirs = sk.MLPClassifier(**SMALL, solver="lbfgs", max_iter=k + 1).fit(X, y)
        assert_allclose(model.validation_loss_curve_[k],
                        log_loss(y_val, theirs.predict_proba(X_val)), rtol=1e-6)
    assert model.validation_scores_[-1] == accuracy_score(y_val, model.predict(X_val))
    assert_allclose(model.validation_loss_curve_[-1],
                    log_loss(y_val, model.predict_proba(X_val)), rtol=1e-7)
    theirs = sk.MLPClassifier(**SMALL, solver="lbfgs", max_iter=15).fit(X, y)
    for a, b in zip(model.coefs_, theirs.coefs_):
        assert_allclose(a, b, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- input and its errors

def test_X_val_as_a_dataframe_and_as_sparse_scores_as_the_array():
    import pandas as pd  # the test extra has it: never skipped
    X, y, X_val, y_val = _classification(2)
    params = {**SMALL, "max_iter": 3}
    dense = MLPClassifier(**params).fit(X, y, X_val=X_val, y_val=y_val)
    columns = [f"f{i}" for i in range(X.shape[1])]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names")
        frame = MLPClassifier(**params, scoring="accuracy").fit(
            pd.DataFrame(X, columns=columns), y,
            X_val=pd.DataFrame(X_val, columns=columns), y_val=pd.Series(y_val))
    sparse = MLPClassifier(**params).fit(X, y, X_val=sp.csc_matrix(X_val), y_val=y_val)
    float32 = MLPClassifier(**params).fit(X.astype(np.float32), y, X_val=X_val, y_val=y_val)
    for other in (frame, sparse):
        assert_allclose(other.validation_loss_curve_, dense.validation_loss_curve_, rtol=1e-12)
        assert other.validation_scores_ == dense.validation_scores_
    assert_allclose(float32.validation_loss_curve_, dense.validation_loss_curve_, rtol=1e-4)


@pytest.mark.parametrize("given, message", [
    ({"X_val": "X"}, "X_val is provided, but y_val was not provided."),
    ({"y_val": "y"}, "y_val is provided, but X_val was not provided."),
    ({"sample_weight_val": "w"}, "sample_weight_val is provided, but X_val and y_val were "
                                 "not provided."),
])
def test_incomplete_validation_data_is_refused(given, message):
    X, y, X_val, y_val = _classification(2)
    values = {"X": X_val, "y": y_val, "w": np.ones(len(y_val))}
    model = MLPClassifier(**SMALL, max_iter=2)
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, **{k: values[v] for k, v in given.items()})
    assert not hasattr(model, "coefs_")


def test_bad_validation_data_is_refused_and_leaves_the_model_as_it_was():
    X, y, X_val, y_val = _classification(2)
    model = MLPClassifier(**SMALL, max_iter=2).fit(X, y)
    before = [c.copy() for c in model.coefs_]
    cases = [
        ({"X_val": X_val[:, :3], "y_val": y_val}, ValueError, "features"),
        ({"X_val": X_val, "y_val": y_val + 5}, ValueError, "y_val has classes not in"),
        ({"X_val": X_val, "y_val": y_val[:-1]}, ValueError, "inconsistent numbers"),
        ({"X_val": X_val, "y_val": y_val, "sample_weight_val": np.ones(3)}, ValueError,
         "sample_weight"),
        ({"X_val": X_val, "y_val": y_val, "sample_weight_val": np.zeros(len(y_val))},
         ValueError, "non-zero"),
        ({"X_val": np.full_like(X_val, np.nan), "y_val": y_val}, ValueError, "NaN"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            model.fit(X, y, **kwargs)
        for a, b in zip(model.coefs_, before):
            np.testing.assert_array_equal(a, b)
    regressor = MLPRegressor(**SMALL, max_iter=2)
    X_r, y_r, X_rv, y_rv = _regression()
    with pytest.raises(ValueError, match="y_val has 2 output columns"):
        regressor.fit(X_r, y_r, X_val=X_rv, y_val=np.column_stack([y_rv, y_rv]))


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("error", [_Interrupt, KeyboardInterrupt])
def test_a_scorer_that_fails_mid_fit_leaves_the_model_as_it_was(error):
    X, y, X_val, y_val = _classification(2)
    model = MLPClassifier(**SMALL, max_iter=5).fit(X, y)
    before = {k: v for k, v in model.__dict__.items()}
    coefs = [c.copy() for c in model.coefs_]
    calls = []

    def scorer(estimator, X_score, y_score):
        calls.append(1)
        if len(calls) == 3:
            raise error("stop")
        return estimator.score(X_score, y_score)

    model.set_params(scoring=scorer, warm_start=True, early_stopping=True)
    with pytest.raises(error):
        model.fit(X, y, X_val=X_val, y_val=y_val)
    model.set_params(scoring=None, warm_start=False, early_stopping=False)
    assert model.__dict__.keys() == before.keys()
    for name, value in before.items():
        assert model.__dict__[name] is value, name
    for a, b in zip(model.coefs_, coefs):
        np.testing.assert_array_equal(a, b)


def test_partial_fit_takes_no_validation_data():
    X, y, X_val, y_val = _classification(2)
    with pytest.raises(TypeError):
        MLPClassifier(**SMALL).partial_fit(X, y, classes=[0, 1], X_val=X_val, y_val=y_val)


# ---------------------------------------------------------------- clone, pickle, params

def _module_scorer(estimator, X, y):
    return estimator.score(X, y)


def test_scoring_is_cloned_pickled_and_the_curves_kept():
    X, y, X_val, y_val = _classification(2)
    model = MLPClassifier(**SMALL, max_iter=3, scoring=_module_scorer)
    assert clone(model).scoring is _module_scorer
    model.fit(X, y, X_val=X_val, y_val=y_val)
    copy = pickle.loads(pickle.dumps(model))
    assert copy.scoring is _module_scorer
    assert copy.validation_scores_ == model.validation_scores_
    assert copy.validation_loss_curve_ == model.validation_loss_curve_
    np.testing.assert_array_equal(copy.predict_proba(X_val), model.predict_proba(X_val))


def test_a_scorer_on_the_split_of_a_dataframe_gives_no_feature_name_warnings():
    import pandas as pd  # the test extra has it: never skipped
    X, y, _, _ = _classification(2)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    params = {**SMALL, "max_iter": 3, "early_stopping": True}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*feature names")
        ours = MLPClassifier(**params, scoring="accuracy").fit(frame, y)
    theirs = sk.MLPClassifier(**params).fit(X, y)
    assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-12)
