"""scikit-learn's input checks of the MLP estimators (fit and predict), fast for plain NumPy arrays.

scikit-learn's ``validate_data``, ``type_of_target`` (three calls per classifier fit),
``LabelBinarizer.fit`` and ``check_random_state`` cost about 2 ms per fit whatever the data
size: dataframe detection, array-API namespaces, an OS entropy draw. On a small data set that
is a third of nnfast's fit. For the common input, X and y plain ``numpy.ndarray`` of numbers
(y also of strings), the functions below make the same checks and return the same arrays and
attributes directly. The array checks never raise: whatever they do not recognise, or
whatever fails a check, they decline (return None), and the estimator runs scikit-learn's
own functions, so that every error and warning is scikit-learn's. The fast path thus only
ever accepts input that scikit-learn accepts, with the same result.
"""

import numbers
import threading

import numpy as np
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state as _sklearn_check_random_state

from .._training.random import legacy_random_state

# The dtypes scikit-learn's validate_data keeps (dtype=(float64, float32)); any other
# numbers are converted to the first.
_KEPT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
# Label dtypes whose type_of_target the fast path computes: bools, integers, unicode strings,
# and the two float widths (integral values only; others are "continuous", not labels).
_LABEL_KINDS = "biuU"


# Per thread, the RandomState that fits seeded by an integer draw from (check_random_state).
_fit_random_states = threading.local()


def check_random_state(seed):
    """scikit-learn's ``check_random_state`` for a fit: an integer seed gives a RandomState
    in the state of ``RandomState(seed)``, others scikit-learn's answer.

    scikit-learn makes a new RandomState for an integer; here each thread re-seeds one of
    its own (a new one costs as much as an epoch of a small fit, ``nnfast._training.random``). That
    is the same for the fit, which is the only user of the state (it is made at the start
    of the fit and dropped at its end; a thread runs one fit at a time); the caller must
    not keep it beyond the fit.
    """
    if not isinstance(seed, numbers.Integral):
        return _sklearn_check_random_state(seed)
    random_state = getattr(_fit_random_states, "random_state", None)
    if random_state is None:
        random_state = _fit_random_states.random_state = legacy_random_state(seed)
    else:
        random_state.seed(seed)
    return random_state


def _finite(array):
    """Whether a float array holds only finite values. One sum, as scikit-learn's own first
    test: a finite sum means finite values; an infinite one (perhaps only an overflowing sum
    of finite values) declines the fast path, and scikit-learn looks element by element."""
    return bool(np.isfinite(np.sum(array, dtype=np.float64)))


def training_arrays(estimator, X, y, reset, numeric_targets):
    """``validate_data(estimator, X, y, multi_output=True, dtype=(float64, float32),
    reset=reset, y_numeric=numeric_targets)`` for plain arrays, or None to decline.

    Accepted: X an ``ndarray`` (exactly, not a subclass) of shape (n >= 1, m >= 1) of
    float64 or float32 (kept) or of bools or integers (converted to float64), finite; y an
    ``ndarray`` of n rows (1-D, or 2-D with at least one column) of bools, integers, finite
    floats or, for a classifier, unicode strings. With ``reset`` the estimator's
    ``n_features_in_`` is set and a ``feature_names_in_`` of an earlier fit removed, as
    scikit-learn does for input without column names; without it, X must have
    ``n_features_in_`` columns and the estimator must not have been fitted with feature names
    (scikit-learn warns then). Nothing is changed on the estimator when declining.
    """
    X = _feature_array(X)
    if X is None or type(y) is not np.ndarray:
        return None
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0] or (y.ndim == 2 and y.shape[1] < 1):
        return None
    kind = y.dtype.kind
    if kind == "f":
        if not _finite(y):
            return None
    elif kind not in ("biu" if numeric_targets else _LABEL_KINDS):
        return None
    if reset:
        estimator.n_features_in_ = X.shape[1]
        estimator.__dict__.pop("feature_names_in_", None)
    elif not _fits_features(estimator, X):
        return None
    return X, y


def prediction_array(estimator, X):
    """``validate_data(estimator, X, reset=False, dtype=(float64, float32))`` of a fitted
    estimator for a plain array, or None to decline: X as :func:`training_arrays` accepts
    it, with the estimator's ``n_features_in_`` columns, the estimator fitted without
    feature names. Its ~0.2 ms are most of a small prediction."""
    X = _feature_array(X)
    return X if X is not None and _fits_features(estimator, X) else None


def _feature_array(X):
    """X an ``ndarray`` (exactly) of shape (n >= 1, m >= 1), finite float64 or float32
    (kept) or bools or integers (converted to float64); else None."""
    if type(X) is not np.ndarray or X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        return None
    if X.dtype in _KEPT_DTYPES:
        return X if _finite(X) else None
    if X.dtype.kind in "biu":
        return np.asarray(X, dtype=np.float64)
    return None


def _fits_features(estimator, X):
    """Whether X may go to an estimator already fitted (or being fitted further) without a
    check of scikit-learn's: its column count, and no feature names to warn about."""
    return (not hasattr(estimator, "feature_names_in_")
            and X.shape[1] == getattr(estimator, "n_features_in_", X.shape[1]))


def class_labels(y):
    """(``type_of_target(y)``, ``unique_labels(y)``) for a 1-D ``ndarray`` of labels that
    passed ``training_arrays``, or None to decline (any other target, and floats that are
    not all integral: scikit-learn's "continuous", which it refuses).

    Two labels or fewer are "binary", more "multiclass". The classes are the sorted distinct
    labels as scikit-learn builds them: an array made from the list of NumPy scalars, so its
    dtype is theirs (strings: as wide as the longest label, not y's width).
    """
    if type(y) is not np.ndarray or y.ndim != 1 or y.shape[0] < 1:
        return None
    if y.dtype in _KEPT_DTYPES:
        # scikit-learn's test for non-integral floats; values beyond int64 compare unequal
        # after the round trip (with NumPy's warning, which scikit-learn then gives).
        with np.errstate(invalid="ignore"):
            if np.any(y != y.astype(np.int64).astype(y.dtype)):
                return None
    elif y.dtype.kind not in _LABEL_KINDS:
        return None
    classes = np.asarray(list(np.unique(y)))
    return ("multiclass" if len(classes) > 2 else "binary"), classes


def fitted_label_binarizer(y_type, classes):
    """A ``LabelBinarizer`` in the state ``LabelBinarizer().fit(y)`` leaves it in, for y of
    ``class_labels`` (dense, one column)."""
    binarizer = LabelBinarizer()
    binarizer.y_type_ = y_type
    binarizer.sparse_input_ = False
    binarizer.classes_ = classes
    return binarizer
