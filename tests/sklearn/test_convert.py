"""``to_sklearn()`` / ``from_sklearn()`` (``nnfast.sklearn._convert``) against scikit-learn.

A converted model must predict as the original, and training continued from it (a
``partial_fit`` step, a warm-start ``fit``) must give the weights that scikit-learn's own
continued training gives from its own fit of the same data and seed: nnfast's fit is
scikit-learn's to rounding (test_mlp_equivalence.py), so both sides start at the same point
and must end at the same point, to ``MLP_RTOL``. That holds only if the optimizer's state
(SGD's velocities and current rate, Adam's step and moments), the records the stopping rule
reads and the early-stopping best weights cross over too.
"""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import neural_network
from sklearn.exceptions import NotFittedError

from conftest import MLP_RTOL, assert_same_mlp
from nnfast.sklearn import MLPClassifier, MLPRegressor
from nnfast.sklearn._convert import DROPPED, NOT_IN_SKLEARN, check_representable

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

BASE = dict(hidden_layer_sizes=(6, 5), max_iter=8, random_state=0, batch_size=16,
            learning_rate_init=0.01)
SOLVERS = {
    "adam": dict(solver="adam", beta_1=0.8, beta_2=0.99),
    "sgd_nesterov": dict(solver="sgd", momentum=0.8),
    "sgd_invscaling": dict(solver="sgd", learning_rate="invscaling", power_t=0.3,
                           learning_rate_init=0.1),
    # Stalls within the epochs: the rate is divided before the conversion.
    "sgd_adaptive": dict(solver="sgd", learning_rate="adaptive", n_iter_no_change=1,
                         tol=10.0),
    "early_stopping": dict(solver="adam", early_stopping=True, validation_fraction=0.2),
    "lbfgs": dict(solver="lbfgs"),
}
TASKS = ["binary", "multiclass", "multilabel", "regression", "multi_output", "poisson"]


def _data(task, dtype=np.float64, n_rows=60):
    rng = np.random.RandomState(0)
    X = rng.randn(n_rows, 4).astype(dtype)
    above = X[:, :3] > 0
    y = {"binary": lambda: np.where(above[:, 0], "yes", "no"),
         "multiclass": lambda: above[:, 0].astype(int) + above[:, 1] + 2 * above[:, 2],
         "multilabel": lambda: above.astype(int),
         "regression": lambda: 2 * X[:, 0] - X[:, 1] ** 2,
         "multi_output": lambda: np.column_stack([X[:, 0] + X[:, 1], np.abs(X[:, 2])]),
         "poisson": lambda: np.exp(0.5 * X[:, 0])}[task]()
    return X, y


def _classes(task):
    if task in ("binary", "multiclass", "multilabel"):
        return MLPClassifier, neural_network.MLPClassifier
    return MLPRegressor, neural_network.MLPRegressor


def _params(task, solver):
    params = {**BASE, **SOLVERS[solver]}
    if task == "poisson":
        params["loss"] = "poisson"
    return params


def _predictions(model, X):
    if hasattr(model, "predict_proba"):
        return model.predict_proba(X)
    return model.predict(X)


def _assert_same_state(ours, theirs, rtol):
    assert_same_mlp(ours, theirs, rtol)
    for name in ("n_outputs_", "n_layers_", "out_activation_", "n_features_in_",
                 "best_validation_score_", "best_loss_"):
        assert hasattr(ours, name) == hasattr(theirs, name), name
        a, b = getattr(ours, name, None), getattr(theirs, name, None)
        if isinstance(b, float):
            assert_allclose(a, b, rtol=rtol, err_msg=name)
        else:
            assert a == b, name
    if hasattr(theirs, "classes_"):
        assert_array_equal(ours.classes_, theirs.classes_)


def _continue_both(a, b, X, y, solver):
    """A partial_fit step (stochastic solvers; early stopping refuses it), then a warm-start
    fit, on both models."""
    if SOLVERS[solver]["solver"] != "lbfgs" and not SOLVERS[solver].get("early_stopping"):
        for model in (a, b):
            model.partial_fit(X, y)
        _assert_same_state(a, b, MLP_RTOL[np.float64])
    for model in (a, b):
        model.set_params(warm_start=True, max_iter=4)
        model.fit(X, y)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", TASKS)
def test_to_sklearn_continues_as_scikit_learn(task, solver):
    X, y = _data(task)
    ours_cls, sk_cls = _classes(task)
    params = _params(task, solver)
    converted = ours_cls(**params).fit(X, y).to_sklearn()
    theirs = sk_cls(**params).fit(X, y)
    assert type(converted) is sk_cls
    assert converted.get_params() == theirs.get_params()
    _assert_same_state(converted, theirs, MLP_RTOL[np.float64])
    _continue_both(converted, theirs, X, y, solver)
    _assert_same_state(converted, theirs, MLP_RTOL[np.float64])


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", TASKS)
def test_from_sklearn_continues_as_scikit_learn(task, solver):
    X, y = _data(task)
    ours_cls, sk_cls = _classes(task)
    params = _params(task, solver)
    theirs = sk_cls(**params).fit(X, y)
    ours = ours_cls.from_sklearn(theirs)
    assert type(ours) is ours_cls
    assert_allclose(_predictions(ours, X), _predictions(theirs, X), rtol=1e-12, atol=1e-14)
    assert_array_equal(ours.predict(X), theirs.predict(X))
    _continue_both(ours, theirs, X, y, solver)
    _assert_same_state(ours, theirs, MLP_RTOL[np.float64])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_predictions_equal_in_both_dtypes(dtype):
    X, y = _data("multiclass", dtype)
    ours = MLPClassifier(**BASE).fit(X, y)
    converted = ours.to_sklearn()
    assert converted.coefs_[0].dtype == np.dtype(dtype)
    # The same weights and the same formulas: equal to the last ulp or two.
    assert_allclose(converted.predict_proba(X), ours.predict_proba(X), rtol=1e-6 if dtype
                    == np.float32 else 1e-12)
    back = MLPClassifier.from_sklearn(converted)
    assert back.coefs_[0].dtype == np.dtype(dtype)
    assert_array_equal(back.predict_proba(X), ours.predict_proba(X))


def test_partial_fit_only_model():
    """A model trained by partial_fit alone (classes given on the first call)."""
    X, y = _data("multiclass")
    params = _params("multiclass", "adam")
    theirs = neural_network.MLPClassifier(**params)
    theirs.partial_fit(X, y, classes=np.arange(8))
    ours = MLPClassifier.from_sklearn(theirs)
    for model in (theirs, ours):
        model.partial_fit(X[:30], y[:30])
    _assert_same_state(ours, theirs, MLP_RTOL[np.float64])
    assert_array_equal(ours.to_sklearn().classes_, np.arange(8))


def test_round_trip_keeps_everything():
    """nnfast -> scikit-learn -> nnfast: the optimizer state and records exactly, the best
    weights still the live ones after early stopping (scikit-learn's aliasing)."""
    X, y = _data("binary")
    ours = MLPClassifier(**_params("binary", "early_stopping")).fit(X, y)
    converted = ours.to_sklearn()
    assert converted._best_coefs is converted.coefs_
    back = MLPClassifier.from_sklearn(converted)
    assert back._best_coefs is back.coefs_
    assert back._network.optimizer == ours._network.optimizer
    assert back._network.optimizer_state == ours._network.optimizer_state
    for name in ("n_iter_", "t_", "loss_", "loss_curve_", "validation_scores_",
                 "best_validation_score_", "_no_improvement_count"):
        assert getattr(back, name) == getattr(ours, name), name
    assert_array_equal(pickle.loads(pickle.dumps(back)).predict_proba(X),
                       ours.predict_proba(X))


def test_feature_names_cross_over():
    import pandas as pd
    X, y = _data("regression")
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    converted = MLPRegressor(**BASE).fit(frame, y).to_sklearn()
    assert_array_equal(converted.feature_names_in_, ["a", "b", "c", "d"])
    back = MLPRegressor.from_sklearn(converted)
    assert_array_equal(back.feature_names_in_, ["a", "b", "c", "d"])


def test_converted_model_is_independent():
    """No array is shared: training the converted model leaves the original alone."""
    X, y = _data("regression")
    ours = MLPRegressor(**BASE).fit(X, y)
    before = [w.copy() for w in ours.coefs_]
    converted = ours.to_sklearn()
    converted.partial_fit(X, y)
    for a, b in zip(ours.coefs_, before):
        assert_array_equal(a, b)
    back = MLPRegressor.from_sklearn(converted)
    back.partial_fit(X, y)
    assert not np.array_equal(back.coefs_[0], converted.coefs_[0])


# --------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_unfitted_is_not_fitted_error(cls):
    with pytest.raises(NotFittedError):
        cls().to_sklearn()
    sk_cls = getattr(neural_network, cls.__name__)
    with pytest.raises(NotFittedError):
        cls.from_sklearn(sk_cls())


def test_from_sklearn_refuses_other_estimators():
    X, y = _data("regression")
    regressor = neural_network.MLPRegressor(**BASE).fit(X, y)
    with pytest.raises(TypeError, match="takes a fitted sklearn.neural_network.MLPClassifier, "
                                        "got sklearn.neural_network._multilayer_perceptron."
                                        "MLPRegressor"):
        MLPClassifier.from_sklearn(regressor)
    with pytest.raises(TypeError, match="got nnfast.sklearn._mlp.MLPRegressor"):
        MLPRegressor.from_sklearn(MLPRegressor(**BASE).fit(X, y))


def test_class_weight_is_refused():
    X, y = _data("binary")
    model = MLPClassifier(**BASE, class_weight="balanced").fit(X, y)
    with pytest.raises(ValueError, match=r"scikit-learn's MLP has no "
                                         r"class_weight='balanced' \(it takes class_weight "
                                         r"None\)"):
        model.to_sklearn()


@pytest.mark.parametrize("activation", ["leaky_relu", "elu", "gelu", "silu", "softplus"])
def test_nnfast_activations_are_refused(activation):
    X, y = _data("regression")
    model = MLPRegressor(**BASE, activation=activation).fit(X, y)
    with pytest.raises(ValueError, match=f"scikit-learn's MLP has no activation="
                                         f"'{activation}'"):
        model.to_sklearn()


# Each option of the table with a value scikit-learn lacks; some are being added to the
# estimators beside this work, so the table is tested on parameter dicts as get_params
# gives them.
REFUSED = [("activation", "gelu"), ("activation", "silu"), ("loss", "huber"),
           ("loss", "absolute_error"), ("loss", "quantile"), ("learning_rate", "cosine"),
           ("class_weight", {0: 2.0}), ("dropout", 0.2), ("max_grad_norm", 1.0),
           ("scoring", "accuracy")]


@pytest.mark.parametrize("name, value", REFUSED)
def test_table_refuses_by_name(name, value):
    params = MLPRegressor().get_params()
    params[name] = value
    with pytest.raises(ValueError, match=f"scikit-learn's MLP has no {name}={value!r}"):
        check_representable(params)


def test_table_accepts_defaults_and_names_unknown_options():
    """Every parameter of the estimators is known to the conversion (scikit-learn's, the
    table's or one dropped on purpose), so that a new option is not dropped silently."""
    for cls in (MLPClassifier, MLPRegressor):
        check_representable(cls().get_params())
    for name in DROPPED:
        check_representable({**MLPRegressor().get_params(), name: 1})
    with pytest.raises(ValueError, match="scikit-learn's MLP has no option 'momentum2'"):
        check_representable({**MLPRegressor().get_params(), "momentum2": 0.5})
    assert set(NOT_IN_SKLEARN) >= {name for name, _ in REFUSED}
