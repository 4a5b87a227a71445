"""The MLP estimators' fit- and predict-time input checks for plain NumPy arrays
(``nnfast.sklearn._input``, ``nnfast._training.random``) against scikit-learn's own
validation, and early stopping's per-epoch predictions, accuracy and R^2 against
scikit-learn's functions.

For X and y plain ndarrays the estimators check them, find the classes and seed the random
state directly instead of through scikit-learn's ``validate_data``, label functions and
``check_random_state``. Each accepted input must give bit for bit the fit (every fitted
attribute, the network's parameters and optimizer state) that scikit-learn's functions give
(the fast path switched off), and the same classes as scikit-learn's MLP; every input the
fast path cannot take or that fails a check must raise scikit-learn's MLP's own error and
warn its warnings.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn import neural_network
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.utils import check_random_state as sklearn_check_random_state

from nnfast.sklearn import _input as _mlp_input
from nnfast._training.plan import OptimizerState
from nnfast._training.random import legacy_random_state
from nnfast.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Five shuffled mini-batch epochs of a small network: the row orders come from the random
# state too.
PARAMS = dict(hidden_layer_sizes=(5,), max_iter=5, batch_size=16, random_state=0)


def _data(n_rows=40, n_features=4):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n_rows, n_features))
    labels = (X @ rng.normal(size=(n_features, 3))).argmax(axis=1)
    return X, labels


def _generic_path(monkeypatch):
    """Switches the fast path off: scikit-learn's functions check every input."""
    monkeypatch.setattr(_mlp_input, "training_arrays", lambda *args: None)
    monkeypatch.setattr(_mlp_input, "prediction_array", lambda *args: None)
    monkeypatch.setattr(_mlp_input, "class_labels", lambda y: None)
    monkeypatch.setattr(_mlp_input, "check_random_state", sklearn_check_random_state)


def _assert_identical(ours, generic, where="model"):
    """Equal values of the same types, arrays of the same dtype, recursively."""
    assert type(ours) is type(generic), where
    if isinstance(ours, dict):
        assert ours.keys() == generic.keys(), where
        for key in ours:
            _assert_identical(ours[key], generic[key], f"{where}[{key!r}]")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(generic), where
        for k, (a, b) in enumerate(zip(ours, generic)):
            _assert_identical(a, b, f"{where}[{k}]")
    elif isinstance(ours, np.ndarray):
        assert ours.dtype == generic.dtype and ours.shape == generic.shape, where
        assert_array_equal(ours, generic, err_msg=where)
    elif isinstance(ours, float) and np.isnan(ours):
        assert np.isnan(generic), where
    else:
        assert ours == generic, where


def _fitted_state(model):
    """Everything a fit sets: the estimator's attributes, its label binarizer's, and the
    trained network's parameters and optimizer state."""
    state = {name: value for name, value in vars(model).items()
             if name not in ("_network", "_label_binarizer")}
    if hasattr(model, "_label_binarizer"):
        state["_label_binarizer"] = dict(vars(model._label_binarizer))
    network = model._network
    state["_network"] = (network.params, network.dtype, network.optimizer_state.values,
                         network.optimizer_state.step, network.optimizer_state.samples_seen,
                         network.optimizer_state.learning_rate)
    return state


def _fit_both_ways(monkeypatch, Estimator, X, y, **params):
    """(fast-path fit, generic fit, the warnings of each) of the same input."""
    fits = []
    for fast in (True, False):
        with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if not fast:
                _generic_path(patch)
            model = Estimator(**{**PARAMS, **params}).fit(X, y)
        fits.append((model, [(w.category, str(w.message)) for w in caught
                             if w.category is not ConvergenceWarning]))
    return fits


X_CASES = {
    "float64": lambda X: X,
    "float32": lambda X: X.astype(np.float32),
    "int": lambda X: np.round(3 * X).astype(np.int64),
    "uint8": lambda X: (X > 0).astype(np.uint8),
    "bool": lambda X: X > 0,
    "fortran": np.asfortranarray,
    "non-contiguous": lambda X: np.repeat(X, 2, axis=1)[:, ::2],
    "float32-fortran": lambda X: np.asfortranarray(X, dtype=np.float32),
}

LABEL_CASES = {
    "int": lambda labels: labels,
    "int32": lambda labels: labels.astype(np.int32),
    "strings": lambda labels: np.array(["setosa", "versicolor", "x"])[labels].astype("<U20"),
    "bool": lambda labels: labels == 1,
    "binary-strings": lambda labels: np.where(labels == 1, "yes", "no"),
    "integral-floats": lambda labels: labels.astype(np.float64) + 1,
    "integral-float32": lambda labels: labels.astype(np.float32) - 1,
    "one-class": lambda labels: np.full(len(labels), 7),
}


@pytest.mark.parametrize("x_case", list(X_CASES))
def test_arrays_give_the_generic_fit(x_case, monkeypatch):
    X, labels = _data()
    X = X_CASES[x_case](X)
    assert _mlp_input.training_arrays(MLPClassifier(), X, labels, True, False) is not None
    (ours, ours_warned), (generic, generic_warned) = _fit_both_ways(
        monkeypatch, MLPClassifier, X, labels)
    _assert_identical(_fitted_state(ours), _fitted_state(generic))
    assert ours_warned == generic_warned == []
    assert ours._network.dtype == (np.float32 if X.dtype == np.float32 else np.float64)


@pytest.mark.parametrize("label_case", list(LABEL_CASES))
def test_labels_give_the_generic_fit_and_scikit_learns_classes(label_case, monkeypatch):
    X, labels = _data()
    y = LABEL_CASES[label_case](labels)
    assert _mlp_input.class_labels(y) is not None
    (ours, _), (generic, _) = _fit_both_ways(monkeypatch, MLPClassifier, X, y)
    _assert_identical(_fitted_state(ours), _fitted_state(generic))
    theirs = neural_network.MLPClassifier(**PARAMS).fit(X, y)
    _assert_identical(ours.classes_, theirs.classes_)
    _assert_identical(ours._label_binarizer.y_type_, theirs._label_binarizer.y_type_)
    _assert_identical(ours.predict(X), theirs.predict(X))


def test_one_column_y_warns_as_scikit_learn(monkeypatch):
    X, labels = _data()
    y = labels.reshape(-1, 1)
    (ours, ours_warned), (generic, generic_warned) = _fit_both_ways(
        monkeypatch, MLPClassifier, X, y)
    _assert_identical(_fitted_state(ours), _fitted_state(generic))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        neural_network.MLPClassifier(**PARAMS).fit(X, y)
    theirs_warned = [(w.category, str(w.message)) for w in caught
                     if w.category is not ConvergenceWarning]
    assert ours_warned == generic_warned == theirs_warned
    assert [category for category, _ in ours_warned] == [DataConversionWarning]


def test_multilabel_targets_take_scikit_learns_label_functions(monkeypatch):
    X, labels = _data()
    y = np.eye(3, dtype=int)[labels]
    y[::3, 0] = 1
    assert _mlp_input.class_labels(y) is None
    (ours, _), (generic, _) = _fit_both_ways(monkeypatch, MLPClassifier, X, y)
    _assert_identical(_fitted_state(ours), _fitted_state(generic))
    _assert_identical(ours.classes_,
                      neural_network.MLPClassifier(**PARAMS).fit(X, y).classes_)


@pytest.mark.parametrize("case", ["float", "int", "float32-X", "two-columns", "one-column"])
def test_regression_targets_give_the_generic_fit(case, monkeypatch):
    X, labels = _data()
    y = X @ np.arange(1.0, 5.0)
    X, y = {"float": (X, y), "int": (X, np.round(y).astype(int)),
            "float32-X": (X.astype(np.float32), y),
            "two-columns": (X, np.column_stack([y, -y])),
            "one-column": (X, y.reshape(-1, 1))}[case]
    (ours, ours_warned), (generic, generic_warned) = _fit_both_ways(
        monkeypatch, MLPRegressor, X, y)
    _assert_identical(_fitted_state(ours), _fitted_state(generic))
    assert ours_warned == generic_warned


def test_partial_fit_and_warm_start_give_the_generic_fits(monkeypatch):
    X, labels = _data()
    fits = []
    for fast in (True, False):
        with monkeypatch.context() as patch:
            if not fast:
                _generic_path(patch)
            batches = MLPClassifier(**PARAMS)
            for rows in (slice(0, 20), slice(20, 40)):
                batches.partial_fit(X[rows], labels[rows], classes=[0, 1, 2])
            warm = MLPClassifier(**PARAMS, warm_start=True).fit(X, labels).fit(X[::-1],
                                                                                 labels[::-1])
        fits.append((_fitted_state(batches), _fitted_state(warm)))
    _assert_identical(fits[0], fits[1])


def test_dataframes_take_scikit_learns_validation():
    pd = pytest.importorskip("pandas")
    X, labels = _data()
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    assert _mlp_input.training_arrays(MLPClassifier(), frame, labels, True, False) is None
    ours = MLPClassifier(**PARAMS).fit(frame, labels)
    theirs = neural_network.MLPClassifier(**PARAMS).fit(frame, labels)
    _assert_identical(ours.feature_names_in_, theirs.feature_names_in_)
    # Continuing on an array: scikit-learn's warning that it has no feature names.
    for model in (ours, theirs):
        model.set_params(warm_start=True)
    with pytest.warns(UserWarning) as ours_warned:
        ours.fit(X, labels)
    with pytest.warns(UserWarning) as theirs_warned:
        theirs.fit(X, labels)
    messages = [[str(w.message) for w in record if w.category is UserWarning]
                for record in (ours_warned, theirs_warned)]
    assert messages[0] == messages[1]
    assert any("does not have valid feature names" in m for m in messages[0])
    # A new fit on an array forgets the names, as scikit-learn's does.
    for model in (ours, theirs):
        model.set_params(warm_start=False).fit(X, labels)
    assert not hasattr(ours, "feature_names_in_") and not hasattr(theirs, "feature_names_in_")
    assert ours.n_features_in_ == theirs.n_features_in_ == 4


def _bad_inputs():
    X, labels = _data()
    nan_X, inf_X = X.copy(), X.copy()
    nan_X[3, 1] = np.nan
    inf_X[0, 0] = -np.inf
    nan_labels = labels.astype(float)
    nan_labels[2] = np.nan
    return {
        "nan-X": (nan_X, labels),
        "inf-X": (inf_X, labels),
        "inf-float32-X": (inf_X.astype(np.float32), labels),
        "empty-X": (X[:0], labels[:0]),
        "no-columns": (X[:, :0], labels),
        "1-D-X": (X[:, 0], labels),
        "3-D-X": (X[:, :, None], labels),
        "scalar-X": (np.float64(1.0), labels),
        "complex-X": (X.astype(complex), labels),
        "string-X": (np.full(X.shape, "a", dtype=object), labels),
        "numeric-strings-X-nan": (nan_X.astype(str).astype(object), labels),
        "rows-differ": (X, labels[:-1]),
        "nan-y": (X, nan_labels),
        "continuous-y": (X, labels + 0.5),
        "y-None": (X, None),
        "y-3-D": (X, labels[:, None, None]),
        "bytes-y": (X, labels.astype("S1")),
        "list-X-nan": (nan_X.tolist(), labels.tolist()),
    }


def _error(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as caught:
            fit()
    return type(caught.value), str(caught.value)


# scikit-learn's MLPClassifier finds continuous targets in unique_labels, whose message
# prints the array; nnfast checks the targets first (check_classification_targets), as
# scikit-learn's other classifiers do, and names their type.
OWN_MESSAGES = {"continuous-y": (ValueError, "Unknown label type: continuous. Maybe")}


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_is_scikit_learns_error(case, monkeypatch):
    X, y = _bad_inputs()[case]
    ours = _error(lambda: MLPClassifier(**PARAMS).fit(X, y))
    with monkeypatch.context() as patch:
        _generic_path(patch)
        assert _error(lambda: MLPClassifier(**PARAMS).fit(X, y)) == ours
    theirs = _error(lambda: neural_network.MLPClassifier(**PARAMS).fit(X, y))
    if case in OWN_MESSAGES:
        error, start = OWN_MESSAGES[case]
        assert ours[0] is theirs[0] is error and ours[1].startswith(start)
        assert theirs[1].startswith("Unknown label type")
    else:
        assert ours == theirs


@pytest.mark.parametrize("case", ["nan-X", "inf-X", "empty-X", "1-D-X", "rows-differ"])
def test_bad_regression_input_is_scikit_learns_error(case):
    X, y = _bad_inputs()[case]
    y = None if y is None else np.asarray(y, dtype=float)
    ours = _error(lambda: MLPRegressor(**PARAMS).fit(X, y))
    theirs = _error(lambda: neural_network.MLPRegressor(**PARAMS).fit(X, y))
    assert ours == theirs


@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
def test_wrong_feature_count_later_is_scikit_learns_error(how):
    X, labels = _data()
    errors = []
    for Estimator in (MLPClassifier, neural_network.MLPClassifier):
        if how == "partial_fit":
            model = Estimator(**PARAMS).partial_fit(X, labels, classes=[0, 1, 2])
            errors.append(_error(lambda: model.partial_fit(X[:, :3], labels)))
        else:
            model = Estimator(**PARAMS, warm_start=True).fit(X, labels)
            errors.append(_error(lambda: model.fit(X[:, :3], labels)))
        # A failed call leaves the model as it was: the next one with the right width works.
        assert model.n_features_in_ == 4
        model.partial_fit(X, labels) if how == "partial_fit" else model.fit(X, labels)
    assert errors[0] == errors[1]
    assert "X has 3 features, but MLPClassifier is expecting 4 features" in errors[0][1]


def test_a_declined_input_leaves_the_estimator_alone():
    # Declining (here: a NaN) changes nothing: scikit-learn's validation then raises.
    X, labels = _data()
    model = MLPClassifier(**PARAMS).fit(X, labels)
    X[0, 0] = np.nan
    assert _mlp_input.training_arrays(model, X[:, :3], labels, True, False) is None
    assert model.n_features_in_ == 4


# ------------------------------------------------------------------------- predictions

def _predictions_both_ways(monkeypatch, model, X):
    """{method: (fast-path result, generic result)} of every prediction method on X."""
    methods = ["predict", "predict_proba", "predict_log_proba"] if hasattr(
        model, "predict_proba") else ["predict"]
    results = {}
    for name in methods:
        ours = getattr(model, name)(X)
        with monkeypatch.context() as patch:
            _generic_path(patch)
            results[name] = (ours, getattr(model, name)(X))
    return results


@pytest.mark.parametrize("x_case", list(X_CASES))
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_predictions_of_arrays_are_the_generic_ones(x_case, Estimator, monkeypatch):
    X, labels = _data()
    model = Estimator(**PARAMS).fit(X, labels)
    X = X_CASES[x_case](X)
    assert _mlp_input.prediction_array(model, X) is not None
    for name, (ours, generic) in _predictions_both_ways(monkeypatch, model, X).items():
        _assert_identical(ours, generic, name)


def _bad_prediction_inputs():
    cases = {name: X for name, (X, _) in _bad_inputs().items()
             if "-X" in name or name == "no-columns"}
    X, _ = _data()
    cases["too-few-columns"] = X[:, :3]
    cases["too-many-columns"] = np.hstack([X, X])
    return cases


@pytest.mark.parametrize("case", list(_bad_prediction_inputs()))
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_bad_prediction_input_is_scikit_learns_error(case, method, monkeypatch):
    X, labels = _data()
    bad = _bad_prediction_inputs()[case]
    ours_model = MLPClassifier(**PARAMS).fit(X, labels)
    theirs_model = neural_network.MLPClassifier(**PARAMS).fit(X, labels)
    ours = _error(lambda: getattr(ours_model, method)(bad))
    with monkeypatch.context() as patch:
        _generic_path(patch)
        assert _error(lambda: getattr(ours_model, method)(bad)) == ours
    assert ours == _error(lambda: getattr(theirs_model, method)(bad))


def test_predicting_an_array_after_a_dataframe_fit_warns_as_scikit_learn(monkeypatch):
    pandas = pytest.importorskip("pandas")
    X, labels = _data()
    frame = pandas.DataFrame(X, columns=["a", "b", "c", "d"])
    model = MLPClassifier(**PARAMS).fit(frame, labels)
    assert _mlp_input.prediction_array(model, X) is None  # declined: the names to warn about
    warned = []
    for generic in (False, True):
        with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if generic:
                _generic_path(patch)
            model.predict(X)
        warned.append([(w.category, str(w.message)) for w in caught])
    assert warned[0] == warned[1] and "does not have valid feature names" in warned[0][0][1]


# ---------------------------------------------------------------------- the random state

@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 - 1, np.int64(7), np.uint32(9), True])
def test_legacy_random_state_is_randomstate_of_the_seed(seed):
    ours, numpys = legacy_random_state(seed), np.random.RandomState(seed)
    for a, b in zip(ours.get_state(), numpys.get_state()):
        assert_array_equal(a, b)
    assert_array_equal(ours.random_sample(5), numpys.random_sample(5))
    assert ours.standard_normal() == numpys.standard_normal()


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3"])
def test_legacy_random_state_refuses_what_randomstate_refuses(seed):
    assert _error(lambda: legacy_random_state(seed)) == _error(
        lambda: np.random.RandomState(seed))


@pytest.mark.parametrize("seed", [None, 0, 5, np.int32(5), "instance", "bad", 1.5])
def test_check_random_state_is_scikit_learns(seed):
    if seed == "instance":
        seed = np.random.RandomState(3)
    try:
        expected = sklearn_check_random_state(seed)
    except ValueError:
        assert _error(lambda: _mlp_input.check_random_state(seed)) == _error(
            lambda: sklearn_check_random_state(seed))
        return
    ours = _mlp_input.check_random_state(seed)
    if seed is None or isinstance(seed, np.random.RandomState):
        assert ours is expected
    else:
        # A RandomState in the state of RandomState(seed), the thread's own (re-seeded for
        # each fit, drawn from in between).
        ours.random_sample(3)
        ours = _mlp_input.check_random_state(seed)
        assert ours is not expected
        for a, b in zip(ours.get_state(), expected.get_state()):
            assert_array_equal(a, b)


def test_optimizer_state_compares_in_the_fitted_state():
    # _fitted_state compares the optimizer state's arrays and counters: a check of the helper
    # that the tests above rely on, so that they can fail.
    X, labels = _data()
    a = MLPClassifier(**PARAMS).fit(X, labels)
    b = MLPClassifier(**{**PARAMS, "max_iter": 6}).fit(X, labels)
    assert isinstance(a._network.optimizer_state, OptimizerState)
    with pytest.raises(AssertionError):
        _assert_identical(_fitted_state(a), _fitted_state(b))


def test_estimator_networks_random_state_stays_undrawn():
    # The networks of fitted estimators share RandomState(1), undrawn (Network._from_params):
    # a shuffled fit of one draws from a copy that it keeps, never from the shared one.
    X, labels = _data()
    a, b = (MLPClassifier(**PARAMS).fit(X, labels) for _ in range(2))
    Y = np.eye(3)[labels]
    a._network.fit(X, Y, iterations=2, batch_size=8, shuffle=True)
    fresh = np.random.RandomState(1).get_state()
    assert not np.array_equal(a._network.random_state.get_state()[1], fresh[1])
    for x, y in zip(b._network.random_state.get_state(), fresh):
        assert_array_equal(x, y)


# ------------------------------------------------- early stopping's held-out predictions

@pytest.mark.parametrize("label_case", ["int", "strings", "binary-strings", "bool",
                                        "integral-float32", "one-class", "multilabel"])
@pytest.mark.parametrize("weighted", [False, True])
def test_decoded_predictions_and_accuracy_are_scikit_learns(label_case, weighted):
    # What early stopping computes every epoch (the held-out labels, the predictions decoded
    # from the network's outputs and their accuracy) against LabelBinarizer.inverse_transform
    # and accuracy_score, exactly, on outputs with ties and values at the threshold.
    from sklearn.metrics import accuracy_score

    from nnfast.sklearn._mlp import _accuracy, _decode

    X, labels = _data()
    y = (np.eye(3, dtype=int)[labels] | (X[:, :3] > 1) if label_case == "multilabel"
         else LABEL_CASES[label_case](labels))
    model = MLPClassifier(**PARAMS).fit(X, y)
    binarizer = model._label_binarizer
    rng = np.random.RandomState(1)
    outputs = np.round(rng.uniform(size=(len(X), model.n_outputs_)), 1)  # ties, and 0.5s
    outputs = outputs.astype(model._network.dtype)
    if model.n_outputs_ == 1:
        outputs = outputs.ravel()
    ours = _decode(binarizer, outputs)
    theirs = binarizer.inverse_transform(outputs)
    _assert_identical(ours, theirs)
    held_out = binarizer.inverse_transform(binarizer.transform(y))
    weights = (rng.uniform(0.5, 2, len(X)).astype(model._network.dtype) if weighted
               else None)
    score = _accuracy(held_out, ours, sample_weight=weights)
    assert type(score) is float
    assert score == accuracy_score(held_out, theirs, sample_weight=weights)
    # One class is always predicted right; otherwise the random outputs miss some.
    assert score == 1 if label_case == "one-class" else 0 < score < 1


R2_CASES = {
    "one-output-flat-predictions": lambda rng, n: (rng.normal(size=(n, 1)),
                                                   rng.normal(size=n)),
    "flat": lambda rng, n: (rng.normal(size=n), rng.normal(size=n)),
    # Outputs 1-4: ordinary, a perfect fit, a constant target fitted exactly, a constant
    # target missed (the scores scikit-learn forces finite).
    "special-columns": lambda rng, n: _special_r2_columns(rng, n),
}


def _special_r2_columns(rng, n):
    y_true = np.column_stack([rng.normal(size=n), rng.normal(size=n), np.full(n, 2.0),
                              np.full(n, -1.0)])
    y_pred = np.column_stack([rng.normal(size=n), y_true[:, 1], y_true[:, 2],
                              rng.normal(size=n)])
    return y_true, y_pred


@pytest.mark.parametrize("case", list(R2_CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n_rows", [2, 57])
def test_r2_is_scikit_learns(case, dtype, weighted, n_rows):
    # The regressor's early-stopping score, every epoch, against r2_score exactly.
    from sklearn.metrics import r2_score

    from nnfast.sklearn._mlp import _r2

    rng = np.random.RandomState(n_rows)
    y_true, y_pred = (a.astype(dtype) for a in R2_CASES[case](rng, n_rows))
    weights = rng.uniform(0.5, 2, n_rows).astype(dtype) if weighted else None
    score = _r2(y_true, y_pred, sample_weight=weights)
    assert type(score) is float
    assert score == r2_score(y_true, y_pred, sample_weight=weights)
    if case == "special-columns" and not weighted:
        # (Weighted, a constant column's mean may be off by an ulp: no longer constant.)
        scores = r2_score(y_true, y_pred, multioutput="raw_values")
        assert scores[1] == scores[2] == 1 and scores[3] == 0 and scores[0] < 1


@pytest.mark.parametrize("y_true, y_pred, weights", [
    pytest.param([1.0, 2.0, 4.0], [1.5, 2.0, 3.0], None, id="lists"),
    pytest.param(np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0], np.float32), None,
                 id="mixed-dtypes"),
    pytest.param(np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0]),
                 np.array([1, 2, 1]), id="integer-weights"),
    pytest.param(np.array([1, 2, 4]), np.array([1, 2, 3]), None, id="integers"),
])
def test_r2_of_other_inputs_is_r2_score(y_true, y_pred, weights):
    from sklearn.metrics import r2_score

    from nnfast.sklearn._mlp import _r2

    assert _r2(y_true, y_pred, sample_weight=weights) == r2_score(y_true, y_pred,
                                                                  sample_weight=weights)


def test_r2_of_one_row_warns_as_r2_score():
    from sklearn.exceptions import UndefinedMetricWarning

    from nnfast.sklearn._mlp import _r2

    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(_r2(np.array([1.0]), np.array([2.0])))


# ------------------------------------------- containers and layouts of every kind (issue 15)


def _containers():
    """{case: (X, y, task)}: inputs scikit-learn's MLP takes, in every container and layout;
    2-D targets that are not C-contiguous among them."""
    import pandas as pd

    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 4))
    Y = X @ rng.normal(size=(4, 3))
    labels = np.array(["a", "b", "c"])[Y.argmax(axis=1)]
    indicator = (Y > 0).astype(int)
    read_only = X.copy()
    read_only.flags.writeable = False
    return {
        "dataframe-Y": (X, pd.DataFrame(Y[:, :2]), "regression"),
        "dataframe-X-series-y": (pd.DataFrame(X, columns=list("pqrs")), pd.Series(Y[:, 0]),
                                 "regression"),
        "fortran-Y": (X, np.asfortranarray(Y), "regression"),
        "fortran-X": (np.asfortranarray(X), Y[:, 0], "regression"),
        "strided-X-and-Y": (np.repeat(X, 2, axis=1)[:, ::2], np.repeat(Y, 2, axis=1)[:, ::2],
                            "regression"),
        "strided-rows": (np.repeat(X, 2, axis=0)[::2], Y[:, :2], "regression"),
        "read-only": (read_only, Y[:, 0], "regression"),
        "float32-fortran-Y": (X.astype(np.float32), np.asfortranarray(Y, dtype=np.float32),
                              "regression"),
        "lists": (X.tolist(), Y[:, 0].tolist(), "regression"),
        "fortran-indicator": (X, np.asfortranarray(indicator), "classification"),
        "dataframe-indicator": (X, pd.DataFrame(indicator), "classification"),
        "transposed-indicator": (X, np.ascontiguousarray(indicator.T).T, "classification"),
        "series-labels": (pd.DataFrame(X), pd.Series(labels), "classification"),
        "list-labels": (X, labels.tolist(), "classification"),
    }


CONTAINERS = list(_containers())


@pytest.mark.parametrize("case", CONTAINERS)
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_every_container_and_layout_fits_as_scikit_learn(case, solver):
    X, y, task = _containers()[case]
    params = dict(hidden_layer_sizes=(5,), max_iter=5, random_state=0, solver=solver,
                  batch_size=16)
    Ours, Theirs = ((MLPRegressor, neural_network.MLPRegressor) if task == "regression"
                    else (MLPClassifier, neural_network.MLPClassifier))
    ours, theirs = Ours(**params).fit(X, y), Theirs(**params).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.dtype == b.dtype or solver == "lbfgs"
        np.testing.assert_allclose(a, b, rtol=1e-9 if a.dtype == np.float64 else 1e-4,
                                   atol=1e-12 if a.dtype == np.float64 else 1e-5)
    if solver != "lbfgs":
        # partial_fit takes the same inputs, and continues as scikit-learn's.
        classes = ({"classes": np.unique(np.asarray(y))} if task != "regression"
                   and np.asarray(y).ndim == 1 else {})
        for model in (ours, theirs):
            model.partial_fit(X, y, **classes)
        for a, b in zip(ours.coefs_, theirs.coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-9 if a.dtype == np.float64 else 1e-4,
                                       atol=1e-12 if a.dtype == np.float64 else 1e-5)
    # And predicts the same from the same containers.
    methods = ["predict"] + (["predict_proba", "predict_log_proba"] if task != "regression"
                             else [])
    for method in methods:
        a, b = getattr(ours, method)(X), getattr(theirs, method)(X)
        # (scikit-learn's L-BFGS turns float32 weights into float64 ones: so its outputs.)
        assert type(a) is type(b) and a.shape == b.shape
        assert a.dtype == b.dtype or solver == "lbfgs"
        if a.dtype.kind == "f":
            single = a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-4 if single else 1e-7,
                                       atol=1e-5 if single else 1e-9)
        else:
            assert_array_equal(a, b)
    single = ours.coefs_[0].dtype == np.float32
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), rel=1e-4 if single else 1e-7)


@pytest.mark.parametrize("meta", ["multi-output", "chain", "stacking"])
def test_meta_estimators_fit_as_with_scikit_learns_mlp(meta):
    # scikit-learn's meta-estimators hand the MLP their own target layouts (a stacking
    # classifier's multilabel indicator, in Fortran order among them).
    from sklearn.datasets import make_multilabel_classification
    from sklearn.ensemble import StackingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import ClassifierChain, MultiOutputClassifier

    X, Y = make_multilabel_classification(n_samples=60, n_features=5, n_classes=3,
                                          random_state=0)
    results = []
    for Model in (MLPClassifier, neural_network.MLPClassifier):
        mlp = Model(hidden_layer_sizes=(5,), max_iter=20, random_state=0)
        if meta == "multi-output":
            model = MultiOutputClassifier(mlp).fit(X, Y)
        elif meta == "chain":
            model = ClassifierChain(mlp, random_state=0).fit(X, Y)
        else:
            model = StackingClassifier(
                [("mlp", mlp)], final_estimator=MultiOutputClassifier(LogisticRegression()),
                cv=3).fit(X, Y)
        proba = model.predict_proba(X)
        results.append(np.stack(proba) if isinstance(proba, list) else proba)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-7, atol=1e-9)
