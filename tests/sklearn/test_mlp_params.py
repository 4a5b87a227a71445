"""The MLP estimators' parameter validation (``nnfast.sklearn._params``) against the installed
scikit-learn's: the same ``_parameter_constraints``; for every parameter and a pool of
invalid values and types, the same exception class and message from ``fit`` and
``partial_fit`` as scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` raise; valid edge
values accepted by both; scikit-learn's ``check_param_validation``; where validation is
skipped (``skip_parameter_validation``, ``partial_fit`` on a fitted estimator); the checks
scikit-learn makes at fit time (hidden layer widths, early stopping with ``partial_fit``,
``validation_fraction=0``) in its order relative to the data's checks. nnfast's own
parameters (``n_threads``, ``class_weight``) are held to scikit-learn's messages for the same
constraints (``class_weight``'s are ``LogisticRegression``'s).
"""

import re
import warnings

import numpy as np
import pytest
import sklearn
import sklearn.neural_network as sk
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints
from sklearn.utils.estimator_checks import check_param_validation

from nnfast.sklearn import _params as _mlp_params
from nnfast.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning",
                                        "ignore:Got `batch_size`:UserWarning",
                                        "ignore:batch_size=:UserWarning")

PAIRS = {"classifier": (MLPClassifier, sk.MLPClassifier),
         "regressor": (MLPRegressor, sk.MLPRegressor)}
# Small, quick fits: the point is which values they accept, not what they learn.
BASE = {"hidden_layer_sizes": (3,), "max_iter": 2, "random_state": 0}

_rng = np.random.RandomState(0)
X = _rng.normal(size=(24, 3))
Y_CLASS = np.arange(24) % 2
Y_REG = np.abs(X[:, 0]) * 2.0  # >= 0: "poisson" takes it too


def _target(kind):
    return Y_CLASS if kind == "classifier" else Y_REG


class _BadType:
    """An object no constraint accepts (as check_param_validation's)."""

    def __repr__(self):  # a fixed repr: both estimators' messages quote it
        return "<BadType>"


# Invalid values: wrong types, out of range, nan, inf, bools for numbers, NumPy scalars,
# strings, containers. Values that happen to be valid for a parameter are in VALID below or
# simply accepted by both (the comparison holds either way).
GENERIC_BAD = [_BadType(), "yes", "", -1, 0, -0.5, 1.5, 3.0, np.nan, np.inf, -np.inf,
               np.float64(np.nan), np.float32(-1.0), np.int64(-2), np.True_, np.bool_(False),
               None, {}, [0], (1.5,), [], {"a": 1}, 2**40 * -1, 1j]
EXTRA_BAD = {
    "hidden_layer_sizes": ["10", (10, 0), [-1], np.array([0, 3]), 0.5, np.float64(2.0)],
    "activation": ["softmax", "Relu", b"relu", ("relu",)],
    "solver": ["newton", "ADAM", b"adam"],
    "alpha": [-1e-300, np.float32(np.inf), np.float64(-1.0), np.int32(-1), np.float64(np.inf)],
    "batch_size": [0, "big", "AUTO", 2.0, np.float64(4.0)],
    "learning_rate": ["fast", "Constant"],
    "learning_rate_init": [0, 0.0, -0.0, np.float64(0.0)],
    "power_t": [-0.5],
    "max_iter": [0, 1.0, np.float64(5.0), "5", np.int64(0), np.int32(-3)],
    "shuffle": [1, 0, "True", np.int64(1)],
    "random_state": [-1, 2**32, 1.0, "0", np.float64(3.0)],
    "tol": [-1.0, -1e-12],
    "verbose": [-1, 1.0, "2", np.float64(1.0)],
    "warm_start": [1, "False", np.int64(0)],
    "momentum": [1.0000001, -1e-9, np.float32(1.5)],
    "nesterovs_momentum": [1, "yes"],
    "early_stopping": [1, "yes"],
    "validation_fraction": [1, 1.0, -0.1, np.float32(1.0)],
    "beta_1": [1, 1.0, -0.1],
    "beta_2": [1.0, -0.1, np.float64(1.0), np.float32(np.nan), np.int32(1)],
    "epsilon": [0, 0.0, -1e-8, np.float32(0.0), np.int64(0), np.float32(np.nan)],
    "n_iter_no_change": [0, 3.0, np.float64(3.0), -np.inf],
    "max_fun": [0, 1.0, "15000"],
    "loss": ["absolute", "squared", "Poisson"],
}
# Valid edge values (bools where numbers go, NumPy scalars, the ends of closed intervals).
VALID = {
    "hidden_layer_sizes": [1, (1,), [2, 1], (), np.array([2, 3]), np.int64(2), [np.int64(2)]],
    "activation": ["identity", "logistic", "tanh", "relu"],
    "solver": ["lbfgs", "sgd", "adam"],
    "alpha": [0, 0.0, True, np.float32(0.5), np.int64(2), 1e-300],
    "batch_size": ["auto", 1, True, np.int64(5), 1000],
    "learning_rate": ["constant", "invscaling", "adaptive"],
    "learning_rate_init": [1e-300, True, np.float32(0.01), 1],
    "power_t": [0, 0.0, False, np.float64(2.0)],
    "max_iter": [1, True, np.int64(2), np.uint8(3)],
    "shuffle": [False, np.True_],
    "random_state": [None, 0, 2**32 - 1, np.int64(5), np.random.RandomState(1)],
    "tol": [0, 0.0, True, 1e300],
    "verbose": [False, 0, np.int64(0)],
    "warm_start": [True, np.bool_(False)],
    "momentum": [0, 1, 1.0, True, np.float32(0.5)],
    "nesterovs_momentum": [False, np.False_],
    "early_stopping": [True, np.True_],
    "validation_fraction": [0, 0.0, 0.5, False, np.float64(0.25)],
    "beta_1": [0, 0.0, False, np.float32(0.5), 0.9999999],
    "beta_2": [0, np.float64(0.5)],
    "epsilon": [1e-300, True, np.float32(1.0), 5],
    "n_iter_no_change": [1, True, np.int64(3), np.inf, float("inf"), np.float32(np.inf)],
    "max_fun": [1, True, np.int64(10)],
    "loss": ["squared_error", "poisson"],
}
SHARED = sorted(sk.MLPRegressor._parameter_constraints)
CASES = [(kind, name) for kind in PAIRS for name in SHARED
         if name != "loss" or kind == "regressor"]
# nnfast's own parameters, beside scikit-learn's.
OWN = {"classifier": {"n_threads", "class_weight", "scoring", "warmup_fraction",
                      "max_grad_norm", "dropout"},
       "regressor": {"n_threads", "scoring", "warmup_fraction", "max_grad_norm", "dropout",
                     "huber_delta", "quantile"}}


# Parameters whose options nnfast widens (string options beyond scikit-learn's): its
# constraint must accept every option scikit-learn's does, and its errors differ from
# scikit-learn's only in the list of options.
WIDENED = {"activation", "learning_rate", "loss"}


def _without_options(outcome):
    """An outcome with the braces of an options list emptied."""
    if outcome is None:
        return None
    kind, message = outcome
    return kind, re.sub(r"\{[^}]*\}", "{...}", message)


def _outcome(call):
    """(exception class, message) of call(), or None when it returns."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except Exception as exc:  # noqa: BLE001 - any exception is compared
        return type(exc), str(exc)
    return None


def _fit_outcomes(kind, params, method):
    """The outcome of ``method`` on nnfast's and on scikit-learn's estimator with params;
    for partial_fit, also whether each has the method."""
    results = []
    for Estimator in PAIRS[kind]:
        model = Estimator(**{**BASE, **params})
        if method == "fit":
            results.append(_outcome(lambda: model.fit(X, _target(kind))))
            continue
        if not hasattr(model, "partial_fit"):
            results.append("no partial_fit")
            continue
        kwargs = {"classes": [0, 1]} if kind == "classifier" else {}
        results.append(_outcome(lambda: model.partial_fit(X, _target(kind), **kwargs)))
    return results


def _describe(constraint):
    return (type(constraint).__name__, str(constraint), getattr(constraint, "type", None),
            getattr(constraint, "left", None), getattr(constraint, "right", None),
            getattr(constraint, "closed", None))


# ------------------------------------------------------------------------ the constraints

@pytest.mark.parametrize("kind", PAIRS)
def test_constraints_are_scikit_learns_plus_nnfasts_own(kind):
    ours, theirs = (E._parameter_constraints for E in PAIRS[kind])
    own = OWN[kind]
    assert set(ours) == set(theirs) | own
    for name, constraints in theirs.items():
        if name in WIDENED:
            (wide,), (narrow,) = ours[name], constraints
            assert set(narrow.options) < set(wide.options), name
            continue
        assert [_describe(c) for c in ours[name]] == [_describe(c) for c in constraints], name
    # Every parameter of the estimator has constraints, and the quick test knows each one.
    assert set(ours) == set(PAIRS[kind][0]().get_params())
    assert set(ours) <= set(_mlp_params._PLAIN_VALUE)


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_scikit_learns_check_param_validation(Estimator):
    check_param_validation(Estimator.__name__, Estimator(**BASE))
    check_param_validation(Estimator.__name__, Estimator(**BASE, solver="sgd"))


# ---------------------------------------------------- invalid values: the same class, text

@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("kind, name", CASES)
def test_invalid_values_raise_scikit_learns_error(kind, name, method):
    for value in GENERIC_BAD + EXTRA_BAD.get(name, []):
        ours, theirs = _fit_outcomes(kind, {name: value}, method)
        if name in WIDENED:
            ours, theirs = _without_options(ours), _without_options(theirs)
        assert ours == theirs, (name, value)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("kind, name", CASES)
def test_valid_edge_values_are_accepted_by_both(kind, name, method):
    for value in VALID[name]:
        if (kind, name, value, method) == ("regressor", "solver", "lbfgs", "partial_fit"):
            continue  # a deliberate difference: test_regressor_partial_fit_and_lbfgs
        ours, theirs = _fit_outcomes(kind, {name: value}, method)
        assert ours == theirs, (name, value)
        if method == "fit" or theirs != "no partial_fit":
            # Only early stopping with partial_fit refuses (a fit-time rule, tested below).
            assert theirs is None or (name == "early_stopping" and method == "partial_fit"), \
                (name, value, theirs)


def test_the_quick_test_never_accepts_what_scikit_learn_refuses():
    """validate_params skips scikit-learn's machinery for the values its quick test accepts;
    each of them must pass scikit-learn's constraints."""
    for Estimator in (MLPClassifier, MLPRegressor):
        constraints = Estimator._parameter_constraints
        for name in constraints:
            for value in GENERIC_BAD + EXTRA_BAD.get(name, []) + VALID.get(name, []):
                if _mlp_params._PLAIN_VALUE[name](value):
                    validate_parameter_constraints({name: constraints[name]}, {name: value},
                                                   caller_name=Estimator.__name__)


def test_regressor_partial_fit_and_lbfgs():
    """scikit-learn's regressor has partial_fit whatever the solver (its availability test
    returns its solver check uncalled), so an invalid solver gets InvalidParameterError
    there, in both; with "lbfgs" it runs L-BFGS fits, which nnfast refuses as the
    classifier does (AttributeError)."""
    assert hasattr(sk.MLPRegressor(solver="lbfgs"), "partial_fit")
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert not hasattr(sk.MLPClassifier(solver="lbfgs"), "partial_fit")
    for solver in ("newton", None, 1):
        ours, theirs = _fit_outcomes("regressor", {"solver": solver}, "partial_fit")
        assert ours == theirs and ours[0] is InvalidParameterError


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("value", [0, -1, 1025, 2.0, "4", np.float64(1.0), np.nan, np.inf,
                                   np.True_, [2], _BadType()])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_n_threads_invalid_values(Estimator, value, method):
    model = Estimator(**BASE, n_threads=value)
    kwargs = {"classes": [0, 1]} if Estimator is MLPClassifier and method == "partial_fit" \
        else {}
    y = Y_CLASS if Estimator is MLPClassifier else Y_REG
    with pytest.raises(InvalidParameterError) as info:
        getattr(model, method)(X, y, **kwargs)
    # scikit-learn's text for the constraint (None or an int in [1, MAX_THREADS]).
    assert str(info.value) == (
        f"The 'n_threads' parameter of {Estimator.__name__} must be an int in the range "
        f"[1, {_mlp_params.MAX_THREADS}] or None. Got {value!r} instead.")
    assert not hasattr(model, "coefs_")


@pytest.mark.parametrize("value", [None, 1, 2, True, np.int64(1)])
def test_n_threads_valid_values(value):
    MLPClassifier(**BASE, n_threads=value).fit(X, Y_CLASS)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("value", ["even", "Balanced", [1.0, 2.0], (0, 1), 1.0, np.nan, True,
                                   _BadType()])
def test_class_weight_invalid_values_as_logistic_regressions(value, method):
    """LogisticRegression declares class_weight as nnfast does: its error, renamed."""
    reference = _outcome(lambda: LogisticRegression(class_weight=value).fit(X, Y_CLASS))
    model = MLPClassifier(**BASE, class_weight=value)
    kwargs = {"classes": [0, 1]} if method == "partial_fit" else {}
    ours = _outcome(lambda: getattr(model, method)(X, Y_CLASS, **kwargs))
    assert reference[0] is InvalidParameterError
    assert ours == (InvalidParameterError,
                    reference[1].replace("LogisticRegression", "MLPClassifier"))
    assert not hasattr(model, "coefs_")


@pytest.mark.parametrize("value", [None, "balanced", {0: 1.0, 1: 2.0}, {}])
def test_class_weight_valid_values(value):
    MLPClassifier(**BASE, class_weight=value).fit(X, Y_CLASS)


def test_the_first_invalid_parameter_is_reported_as_scikit_learn_picks_it():
    params = {"tol": -1.0, "alpha": "big", "shuffle": 2, "max_iter": 0}
    assert _fit_outcomes("classifier", params, "fit")[0] == \
        _fit_outcomes("classifier", params, "fit")[1]


def test_a_failed_validation_leaves_the_estimator_as_it_was():
    model = MLPClassifier(**BASE).fit(X, Y_CLASS)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v)
              for k, v in model.__dict__.items()}
    coefs = [c.copy() for c in model.coefs_]
    model.set_params(alpha=-1.0, warm_start=True)
    with pytest.raises(InvalidParameterError):
        model.fit(X, Y_CLASS)
    assert set(model.__dict__) == set(before)
    for a, b in zip(model.coefs_, coefs):
        np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------- where validation is skipped

@pytest.mark.parametrize("kind", PAIRS)
def test_skip_parameter_validation_skips_it_for_both(kind):
    # An int where a bool goes: refused normally, used as its truth value when skipped.
    params = {"shuffle": 1, "early_stopping": 0, "solver": "sgd"}
    normal = _fit_outcomes(kind, params, "fit")
    assert normal[0] == normal[1] and normal[0][0] is InvalidParameterError
    with sklearn.config_context(skip_parameter_validation=True):
        assert _fit_outcomes(kind, params, "fit") == [None, None]
        assert _fit_outcomes(kind, params, "partial_fit") == [None, None]


@pytest.mark.parametrize("kind", PAIRS)
def test_partial_fit_on_a_fitted_estimator_skips_validation_as_scikit_learns(kind):
    kwargs = {"classes": [0, 1]} if kind == "classifier" else {}
    models = [Estimator(**BASE, solver="sgd").partial_fit(X, _target(kind), **kwargs)
              for Estimator in PAIRS[kind]]
    for model in models:
        model.set_params(shuffle=1, tol=True)
    assert [_outcome(lambda m=m: m.partial_fit(X, _target(kind))) for m in models] == \
        [None, None]
    assert models[0].t_ == models[1].t_
    # fit validates again, with scikit-learn's error.
    ours, theirs = (_outcome(lambda m=m: m.fit(X, _target(kind))) for m in models)
    assert ours == theirs and ours[0] is InvalidParameterError


# ------------------------------------------------------------------- fit-time rules, order

@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("params, method, data", [
    ({"hidden_layer_sizes": (4, 0)}, "fit", "good"),
    ({"hidden_layer_sizes": [0]}, "partial_fit", "good"),
    ({"hidden_layer_sizes": [0]}, "fit", "nan"),
    ({"hidden_layer_sizes": [3.5]}, "fit", "good"),
    ({"hidden_layer_sizes": ["a"]}, "fit", "good"),
    # scikit-learn fails later on a bool width, with another TypeError (the one exception
    # the docs list under the estimators' parameter validation).
    ({"hidden_layer_sizes": True}, "fit", "good"),
    ({"hidden_layer_sizes": [4, True]}, "fit", "good"),
    ({"early_stopping": True}, "partial_fit", "good"),
    # The data's error comes first, as in scikit-learn.
    ({"early_stopping": True}, "partial_fit", "nan"),
    ({"early_stopping": True}, "partial_fit", "weights"),
    ({"early_stopping": True, "validation_fraction": 0.0}, "fit", "good"),
    ({"early_stopping": True, "validation_fraction": 0}, "fit", "good"),
    ({"early_stopping": True, "validation_fraction": 0.0}, "fit", "nan"),
    # Parameters first, then the data.
    ({"alpha": -1.0}, "fit", "nan"),
    ({"alpha": -1.0}, "partial_fit", "nan"),
])
def test_fit_time_rules_in_scikit_learns_order(kind, params, method, data):
    Xd = X.copy()
    sample_weight = None
    if data == "nan":
        Xd[3, 1] = np.nan
    elif data == "weights":
        sample_weight = np.ones(5)
    results = []
    for Estimator in PAIRS[kind]:
        model = Estimator(**{**BASE, "solver": "sgd", **params})
        kwargs = {"classes": [0, 1]} if kind == "classifier" and method == "partial_fit" \
            else {}
        results.append(_outcome(lambda: getattr(model, method)(
            Xd, _target(kind), sample_weight=sample_weight, **kwargs)))
        if Estimator in (MLPClassifier, MLPRegressor):
            assert not hasattr(model, "coefs_")  # transactional
    assert results[0] is not None
    assert results[0][0] is results[1][0]
    # NumPy's text names the dtypes' classes; the sample-weight message is nnfast's own
    # (the order is what is compared there).
    if params.get("hidden_layer_sizes") not in (["a"], True, [4, True]) and data != "weights":
        assert results[0] == results[1]


def test_validation_costs_little_for_plain_values():
    """The quick test takes the place of scikit-learn's machinery for plain values (a fit's
    parameters as usually written): it must not call _validate_params then."""
    model = MLPClassifier(**BASE)
    calls = []
    model._validate_params = lambda: calls.append(1)
    _mlp_params.validate_params(model, "fit")
    assert calls == []
    model.set_params(alpha=np.float64(0.1), max_iter=np.int64(5))  # a grid search's values
    _mlp_params.validate_params(model, "fit")
    assert calls == []
    model.set_params(alpha=True)  # scikit-learn's to decide (it accepts it)
    _mlp_params.validate_params(model, "fit")
    assert calls == [1]


def test_messages_name_the_estimator_class():
    with pytest.raises(InvalidParameterError,
                       match=re.escape("The 'shuffle' parameter of MLPClassifier must be an "
                                       "instance of 'bool' or an instance of 'numpy.bool'. "
                                       "Got 'yes' instead.")):
        MLPClassifier(shuffle="yes").fit(X, Y_CLASS)
    with pytest.raises(ValueError):  # InvalidParameterError is both
        MLPRegressor(shuffle="yes").fit(X, Y_REG)
    with pytest.raises(TypeError):
        MLPRegressor(shuffle="yes").fit(X, Y_REG)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("value", ["accuracy_score", "Accuracy", "", 1, 0.5, True, [],
                                   ("accuracy",), {"a": "accuracy"}, _BadType()])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_scoring_invalid_values_as_ridge_cvs(Estimator, value, method):
    """RidgeCV declares scoring as nnfast does (a scorer name, a callable or None): its
    error, renamed."""
    from sklearn.linear_model import RidgeCV

    reference = _outcome(lambda: RidgeCV(scoring=value).fit(X, Y_REG))
    model = Estimator(**BASE, scoring=value)
    kwargs = {"classes": [0, 1]} if Estimator is MLPClassifier and method == "partial_fit" \
        else {}
    y = Y_CLASS if Estimator is MLPClassifier else Y_REG
    ours = _outcome(lambda: getattr(model, method)(X, y, **kwargs))
    assert reference[0] is InvalidParameterError
    assert ours == (InvalidParameterError, reference[1].replace("RidgeCV", Estimator.__name__))
    assert not hasattr(model, "coefs_")


@pytest.mark.parametrize("value", [None, "accuracy", "neg_log_loss", lambda est, X, y: 0.0])
def test_scoring_valid_values(value):
    MLPClassifier(**BASE, scoring=value, early_stopping=True).fit(X, Y_CLASS)
