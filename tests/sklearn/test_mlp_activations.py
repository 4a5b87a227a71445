"""``MLPClassifier`` / ``MLPRegressor`` with the hidden activations scikit-learn lacks
(leaky_relu, elu, gelu, silu, softplus).

scikit-learn cannot train these, so the estimators' fits are held to nnfast.reference (the
estimators on the NumPy backend: the same fit, the oracle's arithmetic) for each solver and
dtype, and their predictions to the reference's forward pass. The formulas themselves are
tested unit by unit in tests/kernels/test_activations.py and against PyTorch in
tests/test_reference_torch.py.
"""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.datasets import load_iris, make_regression
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from nnfast import reference
from nnfast.sklearn import MLPClassifier, MLPRegressor
from nnfast.sklearn import _mlp

from conftest import MLP_RTOL, NNFAST_ACTIVATIONS, assert_same_mlp

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(Estimator, dtype):
    if Estimator is MLPClassifier:
        X, y = load_iris(return_X_y=True)
    else:
        X, y = make_regression(n_samples=120, n_features=5, n_targets=2, noise=0.1,
                               random_state=0)
        y = y / y.std()
    return StandardScaler().fit_transform(X).astype(dtype), y


def _fit_on(backend, monkeypatch, estimator, X, y):
    monkeypatch.setattr(_mlp, "BACKEND", backend)
    return estimator.fit(X, y)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("activation", NNFAST_ACTIVATIONS)
def test_fit_is_the_references(monkeypatch, activation, Estimator, solver, dtype):
    """The compiled fit equals the NumPy reference's (weights, loss curve, counters), and
    predictions are the reference's forward pass of the fitted weights."""
    X, y = _data(Estimator, dtype)
    params = dict(hidden_layer_sizes=(12, 7), activation=activation, solver=solver,
                  max_iter=15, random_state=0, alpha=1e-3, batch_size=32,
                  learning_rate_init=0.01)
    if solver == "lbfgs" and dtype == np.float32:
        # L-BFGS's line search in float32 turns rounding differences into different steps
        # within a few iterations (as against scikit-learn: test_mlp_equivalence.py).
        params["max_iter"] = 3
    ours = _fit_on("cython", monkeypatch, Estimator(**params), X, y)
    oracle = _fit_on("numpy", monkeypatch, Estimator(**params), X, y)
    assert_same_mlp(ours, oracle, MLP_RTOL[dtype])
    assert ours.coefs_[0].dtype == dtype
    output = reference.predict_model(ours.coefs_, ours.intercepts_, X,
                                     (activation, activation), ours.out_activation_)
    if Estimator is MLPClassifier:
        assert_allclose(ours.predict_proba(X), output, rtol=MLP_RTOL[dtype],
                        atol=MLP_RTOL[dtype])
    else:
        assert_allclose(ours.predict(X), output, rtol=MLP_RTOL[dtype], atol=MLP_RTOL[dtype])


@pytest.mark.parametrize("activation", NNFAST_ACTIVATIONS)
def test_each_activation_learns(activation):
    """Iris, 200 epochs of Adam at rate 0.01: every activation fits the training set within
    one row of scikit-learn's relu (0.987; the new ones measured 0.98-0.987)."""
    X, y = _data(MLPClassifier, np.float64)
    settings = dict(hidden_layer_sizes=(20,), max_iter=200, learning_rate_init=0.01,
                    random_state=0)
    relu = SkMLPClassifier(**settings).fit(X, y).score(X, y)
    model = MLPClassifier(activation=activation, **settings).fit(X, y)
    assert model.score(X, y) >= relu - 1.5 / len(y)


@pytest.mark.parametrize("activation", NNFAST_ACTIVATIONS)
def test_clone_pickle_and_warm_start_keep_the_activation(activation):
    X, y = _data(MLPClassifier, np.float64)
    model = MLPClassifier(hidden_layer_sizes=(8,), activation=activation, max_iter=5,
                          random_state=0).fit(X, y)
    assert clone(model).activation == activation
    restored = pickle.loads(pickle.dumps(model))
    assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    # Continued training: pickled and original go on to the same weights.
    restored.set_params(warm_start=True).fit(X, y)
    model.set_params(warm_start=True).fit(X, y)
    for a, b in zip(restored.coefs_, model.coefs_):
        assert_array_equal(a, b)


def test_unknown_activation_lists_every_option():
    X, y = _data(MLPClassifier, np.float64)
    with pytest.raises(InvalidParameterError) as info:
        MLPClassifier(activation="swish").fit(X, y)
    message = str(info.value)
    assert "'activation' parameter of MLPClassifier must be a str among" in message
    for name in ("identity", "logistic", "tanh", "relu") + tuple(NNFAST_ACTIVATIONS):
        assert repr(name) in message
