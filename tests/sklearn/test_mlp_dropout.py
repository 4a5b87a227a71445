"""``MLPClassifier`` / ``MLPRegressor`` with ``dropout``: the compiled fit equals the NumPy
reference's (the estimators on the numpy backend draw the same masks from the same seed),
the same ``random_state`` gives the same fit, predictions use every unit, and the parameter is
validated, cloned, pickled and honoured by ``partial_fit`` and ``warm_start``. The masks
themselves: tests/test_dropout.py."""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_digits, make_regression
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from nnfast import reference
from nnfast.sklearn import MLPClassifier, MLPRegressor
from nnfast.sklearn import _mlp

from conftest import MLP_RTOL, assert_same_mlp

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(Estimator, dtype=np.float64):
    if Estimator is MLPClassifier:
        X, y = load_digits(return_X_y=True)
        X, y = X[:400], y[:400]
    else:
        X, y = make_regression(n_samples=300, n_features=8, n_targets=2, noise=0.1,
                               random_state=0)
        y = y / y.std()
    return StandardScaler().fit_transform(X).astype(dtype), y


PARAMS = dict(hidden_layer_sizes=(40, 20), max_iter=8, random_state=0, batch_size=50,
              learning_rate_init=0.01)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_fit_is_the_references(monkeypatch, Estimator, solver, dtype):
    X, y = _data(Estimator, dtype)
    fits = []
    for backend in ("cython", "numpy"):
        monkeypatch.setattr(_mlp, "BACKEND", backend)
        fits.append(Estimator(solver=solver, dropout=(0.3, 0.1), **PARAMS).fit(X, y))
    assert_same_mlp(fits[0], fits[1], MLP_RTOL[dtype])


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_random_state_makes_the_fit(Estimator):
    X, y = _data(Estimator)
    a, b, c = (Estimator(dropout=0.2, **{**PARAMS, "random_state": seed}).fit(X, y)
               for seed in (0, 0, 1))
    for w, v in zip(a.coefs_, b.coefs_):
        assert_array_equal(w, v)
    assert not np.allclose(a.coefs_[0], c.coefs_[0])


def test_dropout_changes_training_only():
    X, y = _data(MLPClassifier)
    dropped = MLPClassifier(dropout=0.5, **PARAMS).fit(X, y)
    plain = MLPClassifier(**PARAMS).fit(X, y)
    assert not np.allclose(dropped.coefs_[0], plain.coefs_[0])
    # Predictions: the forward pass with every unit of the fitted weights.
    expected = reference.predict_model(dropped.coefs_, dropped.intercepts_, X,
                                       ("relu", "relu"), "softmax")
    assert_allclose(dropped.predict_proba(X), expected, rtol=1e-12)


def test_zero_rate_is_scikit_learns_fit():
    """dropout=0 (and one 0 per layer) draws nothing: the fit of scikit-learn's MLP."""
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    X, y = _data(MLPClassifier)
    theirs = SkMLPClassifier(**PARAMS).fit(X, y)
    for dropout in (0.0, [0, 0]):
        assert_same_mlp(MLPClassifier(dropout=dropout, **PARAMS).fit(X, y), theirs,
                        MLP_RTOL[np.float64])


def test_partial_fit_and_warm_start_keep_dropping():
    """Each call draws its seed from the estimator's random state: a RandomState instance
    given as random_state makes a sequence of calls reproducible."""
    X, y = _data(MLPClassifier)
    runs = []
    for _ in range(2):
        model = MLPClassifier(dropout=0.3, **{**PARAMS, "random_state": np.random.RandomState(5)})
        for _ in range(3):
            model.partial_fit(X, y, classes=np.arange(10))
        model.set_params(warm_start=True, max_iter=2).fit(X, y)
        runs.append(model.coefs_)
    for a, b in zip(*runs):
        assert_array_equal(a, b)


def test_clone_and_pickle_keep_the_rates():
    X, y = _data(MLPClassifier)
    model = MLPClassifier(dropout=(0.3, 0.1), **PARAMS).fit(X, y)
    assert clone(model).dropout == (0.3, 0.1)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.dropout == (0.3, 0.1)
    assert_array_equal(restored.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("dropout, error, match", [
    (1.0, InvalidParameterError, "The 'dropout' parameter of MLPClassifier must be"),
    ("high", InvalidParameterError, "The 'dropout' parameter of MLPClassifier must be"),
    ((0.1,), ValueError, "dropout has 1 rates but the network has 2 hidden layers"),
    ((0.1, 1.5), ValueError, r"dropout\[1\] must be in \[0, 1\)"),
])
def test_bad_dropout_is_refused(dropout, error, match):
    X, y = _data(MLPClassifier)
    model = MLPClassifier(dropout=dropout, **PARAMS)
    with pytest.raises(error, match=match):
        model.fit(X, y)
    assert not hasattr(model, "coefs_")


def test_lbfgs_refuses_dropout():
    X, y = _data(MLPClassifier)
    with pytest.raises(ValueError, match="needs a stochastic solver"):
        MLPClassifier(solver="lbfgs", dropout=0.2, **PARAMS).fit(X, y)
    MLPClassifier(solver="lbfgs", dropout=0.0, **PARAMS).fit(X, y)


def test_to_sklearn_refuses_dropout_and_takes_zero_rates():
    X, y = _data(MLPClassifier)
    with pytest.raises(ValueError, match="dropout"):
        MLPClassifier(dropout=0.2, **PARAMS).fit(X, y).to_sklearn()
    MLPClassifier(dropout=[0.0, 0.0], **PARAMS).fit(X, y).to_sklearn()
