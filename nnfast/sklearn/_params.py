"""The hyperparameters of ``MLPClassifier`` / ``MLPRegressor``, validated once per fit.

scikit-learn checks its MLP's parameters at ``fit`` / ``partial_fit`` (never in ``__init__``,
so that ``clone`` and ``set_params`` keep them as given), from the declarative
``_parameter_constraints`` of each estimator; its ``InvalidParameterError`` (a ``ValueError``
and a ``TypeError``) names the parameter, what it accepts and what it got. nnfast's estimators
take scikit-learn's constraints and add their own parameters' (``n_threads``,
``class_weight``, ``scoring``, ``warmup_fraction``, ``max_grad_norm``, the regressor's
``huber_delta`` and ``quantile``) and widen some of scikit-learn's (``activation``,
``learning_rate`` takes ``"cosine"``, the regressor's ``loss`` the robust losses), so that
scikit-learn's machinery raises exactly its errors.

That machinery costs more than a small fit's whole Python overhead (``get_params`` inspects
the signature; each constraint is built and tested), so ``validate_params`` first runs a
cheap test that accepts only plainly valid values (exact built-in types inside the bounds)
and hands everything else to scikit-learn's ``_validate_params``, which either raises its
error or accepts the value (a NumPy scalar, a bool where a number is expected). The cheap
test never accepts a value scikit-learn refuses; tests/sklearn/test_mlp_params.py holds it to that.
``check_params`` then converts the accepted values for the fit.
"""

import math
import operator
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from sklearn import get_config
from sklearn.metrics import get_scorer_names
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _is_fitted

from .._validation import MAX_THREADS, check_dropout, check_n_threads

# scikit-learn's four hidden activations, then nnfast's (nnfast._training.plan's names).
SKLEARN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
ACTIVATIONS = SKLEARN_ACTIVATIONS + ("leaky_relu", "elu", "gelu", "silu", "softplus")
SOLVERS = ("lbfgs", "sgd", "adam")
STOCHASTIC_SOLVERS = ("sgd", "adam")
SCHEDULES = ("constant", "invscaling", "adaptive", "cosine")
REGRESSION_LOSSES = ("squared_error", "poisson", "absolute_error", "huber", "quantile")
# The regressor's losses that nnfast's Network takes as its loss= (the others are outputs'
# own losses: squared error of "identity", Poisson's of "exp").
ROBUST_LOSSES = ("absolute_error", "huber", "quantile")

# scikit-learn's MLP constraints, its own objects (MLPClassifier's are its base class's,
# MLPRegressor's those and "loss"), reused rather than written out again: a
# StrOptions message lists the options in its set's iteration order, which depends on how
# the set was built (a set literal in scikit-learn's source), so only scikit-learn's objects
# give its messages to the letter on every run. tests/sklearn/test_mlp_params.py holds them to the
# installed scikit-learn's estimators and the quick test below to them.
# nnfast's own: the kernel's thread count (check_n_threads's range; None: all cores), and
# the classifier's class weights, declared as scikit-learn's LogisticRegression declares them;
# the early-stopping score, a scorer name or callable as scikit-learn's searches declare one
# (None: the estimator's own accuracy / R^2).
_N_THREADS = [Interval(Integral, 1, MAX_THREADS, closed="both"), None]
SCORER_NAMES = frozenset(get_scorer_names())
_SCORING = [StrOptions(set(SCORER_NAMES)), callable, None]
# nnfast's hidden activations extend scikit-learn's, in one StrOptions listing them in this
# order (a list, not a set literal: the message is the same on every run).
_ACTIVATION = [StrOptions(dict.fromkeys(ACTIVATIONS).keys())]
# Beyond scikit-learn: the "cosine" schedule (learning_rate, warmup_fraction) and gradient
# clipping for both; the robust losses for the regressor. The widened options are listed in
# order too, as the activations are.
_OPTIMIZATION = {
    "learning_rate": [StrOptions(dict.fromkeys(SCHEDULES).keys())],
    "warmup_fraction": [Interval(Real, 0, 1, closed="left")],
    "max_grad_norm": [Interval(Real, 0, None, closed="neither"), None],
    "dropout": [Interval(Real, 0, 1, closed="left"), "array-like"],
}
CLASSIFIER_CONSTRAINTS = {
    **_SkMLPClassifier._parameter_constraints,
    "activation": _ACTIVATION,
    "n_threads": _N_THREADS,
    "class_weight": [dict, StrOptions({"balanced"}), None],
    "scoring": _SCORING,
    **_OPTIMIZATION,
}
REGRESSOR_CONSTRAINTS = {
    **_SkMLPRegressor._parameter_constraints,
    "activation": _ACTIVATION,
    "n_threads": _N_THREADS,
    "scoring": _SCORING,
    **_OPTIMIZATION,
    "loss": [StrOptions(dict.fromkeys(REGRESSION_LOSSES).keys())],
    "huber_delta": [Interval(Real, 0, None, closed="neither")],
    "quantile": [Interval(Real, 0, 1, closed="neither")],
}


# The cheap test: for each parameter, a predicate true only for values that the constraints
# above accept. Exact types (Python's and NumPy's usual scalars, as a grid search passes them)
# keep bools, other NumPy scalars and subclasses on scikit-learn's path, which decides them;
# NaN fails every comparison.
_INT_TYPES = frozenset({int, np.int64, np.int32})
_REAL_TYPES = _INT_TYPES | {float, np.float64, np.float32}


def _positive_int(v):
    return type(v) in _INT_TYPES and v >= 1


def _non_negative(v):
    return type(v) in _REAL_TYPES and 0 <= v < math.inf


def _positive(v):
    return type(v) in _REAL_TYPES and 0 < v < math.inf


def _unit(v):
    return type(v) in _REAL_TYPES and 0 <= v < 1


def _boolean(v):
    return type(v) is bool


def _choice(choices):
    choices = frozenset(choices)
    return lambda v: type(v) is str and v in choices


_PLAIN_VALUE = {
    "hidden_layer_sizes": lambda v: type(v) is tuple or type(v) is list or _positive_int(v),
    "activation": _choice(ACTIVATIONS),
    "solver": _choice(SOLVERS),
    "alpha": _non_negative,
    "batch_size": lambda v: v == "auto" if type(v) is str else _positive_int(v),
    "learning_rate": _choice(SCHEDULES),
    "learning_rate_init": _positive,
    "power_t": _non_negative,
    "max_iter": _positive_int,
    "shuffle": _boolean,
    "random_state": lambda v: (v is None or (type(v) is int and 0 <= v <= 2**32 - 1)
                               or type(v) is np.random.RandomState),
    "tol": _non_negative,
    "verbose": lambda v: type(v) is bool or (type(v) is int and v >= 0),
    "warm_start": _boolean,
    "momentum": lambda v: type(v) in _REAL_TYPES and 0 <= v <= 1,
    "nesterovs_momentum": _boolean,
    "early_stopping": _boolean,
    "validation_fraction": _unit,
    "beta_1": _unit,
    "beta_2": _unit,
    "epsilon": _positive,
    "n_iter_no_change": lambda v: _positive_int(v) or (type(v) is float and v == math.inf),
    "max_fun": _positive_int,
    "n_threads": lambda v: v is None or (type(v) is int and 1 <= v <= MAX_THREADS),
    "class_weight": lambda v: v is None or type(v) is dict or (type(v) is str
                                                               and v == "balanced"),
    "loss": _choice(REGRESSION_LOSSES),
    # Callables go to scikit-learn's check (its callable constraint accepts them).
    "scoring": lambda v: v is None or (type(v) is str and v in SCORER_NAMES),
    "warmup_fraction": _unit,
    "max_grad_norm": lambda v: v is None or _positive(v),
    "dropout": lambda v: _unit(v) or ((type(v) is tuple or type(v) is list)
                                      and all(_unit(rate) for rate in v)),
    "huber_delta": _positive,
    "quantile": lambda v: type(v) in _REAL_TYPES and 0 < v < 1,
}


def validate_params(estimator, method):
    """Raises scikit-learn's ``InvalidParameterError`` for the first invalid parameter (in
    ``get_params`` order), where and when scikit-learn's ``_fit_context`` would: at ``fit``,
    and at ``partial_fit`` unless the estimator is fitted; never under
    ``sklearn.set_config(skip_parameter_validation=True)``."""
    if get_config()["skip_parameter_validation"]:
        return
    if method == "partial_fit" and _is_fitted(estimator):
        return
    for name in estimator._parameter_constraints:
        if not _PLAIN_VALUE[name](getattr(estimator, name)):
            estimator._validate_params()
            return


@dataclass(frozen=True)
class MLPParams:
    """Every hyperparameter of one fit, converted to plain Python values."""

    hidden_layer_sizes: tuple
    activation: str
    solver: str
    alpha: float
    batch_size: object  # "auto" or int
    learning_rate: str
    learning_rate_init: float
    power_t: float
    max_iter: int
    shuffle: bool
    tol: float
    verbose: bool
    warm_start: bool
    momentum: float
    nesterovs_momentum: bool
    early_stopping: bool
    validation_fraction: object  # a real in [0, 1), as given
    beta_1: float
    beta_2: float
    epsilon: float
    n_iter_no_change: float  # an int, or inf
    max_fun: int
    n_threads: object  # None or int
    scoring: object  # None, a scorer name or a callable scorer(estimator, X, y)
    warmup_fraction: float = 0.0
    max_grad_norm: object = None  # None or float
    dropout: tuple = ()  # one rate per hidden layer
    huber_delta: float = 1.0
    quantile: float = 0.5

    @property
    def warmup_epochs(self):
        """The cosine schedule's warm-up epochs: round(warmup_fraction * max_iter), Python's
        round (half to even)."""
        return round(self.warmup_fraction * self.max_iter)


def check_hidden_layer_sizes(hidden):
    """The hidden widths as a tuple of ints >= 1 (an int is one layer), with scikit-learn's
    check (made in its ``_fit``, whatever the parameter validation) and its error."""
    hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
    if np.any(np.array(hidden) <= 0):
        raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden}.")
    widths = []
    for width in hidden:
        if isinstance(width, (bool, np.bool_)):
            # scikit-learn's fit fails on a bool width later on (TypeError); a flag is no width.
            raise TypeError(f"hidden_layer_sizes must hold integers, got {hidden}")
        # operator.index refuses floats with the TypeError scikit-learn's fit ends in.
        widths.append(operator.index(width))
    return tuple(widths)


def check_params(estimator):
    """The estimator's MLP hyperparameters (validated by ``validate_params``, or not at all
    under ``skip_parameter_validation``) as an ``MLPParams``."""
    e = estimator
    batch_size = e.batch_size
    if not (isinstance(batch_size, str) and batch_size == "auto"):
        batch_size = operator.index(batch_size)
    n_iter_no_change = e.n_iter_no_change
    n_iter_no_change = (math.inf if isinstance(n_iter_no_change, Real)
                        and n_iter_no_change == math.inf else operator.index(n_iter_no_change))
    hidden_layer_sizes = check_hidden_layer_sizes(e.hidden_layer_sizes)
    params = MLPParams(
        hidden_layer_sizes=hidden_layer_sizes,
        activation=e.activation,
        solver=e.solver,
        alpha=float(e.alpha),
        batch_size=batch_size,
        learning_rate=e.learning_rate,
        learning_rate_init=float(e.learning_rate_init),
        power_t=float(e.power_t),
        max_iter=operator.index(e.max_iter),
        shuffle=bool(e.shuffle),
        tol=float(e.tol),
        verbose=bool(e.verbose),
        warm_start=bool(e.warm_start),
        momentum=float(e.momentum),
        nesterovs_momentum=bool(e.nesterovs_momentum),
        early_stopping=bool(e.early_stopping),
        # As given: the early-stopping split takes it as scikit-learn's does (its error for
        # validation_fraction=0 quotes the value).
        validation_fraction=e.validation_fraction,
        beta_1=float(e.beta_1),
        beta_2=float(e.beta_2),
        epsilon=float(e.epsilon),
        n_iter_no_change=n_iter_no_change,
        max_fun=operator.index(e.max_fun),
        # The kernel's safety: checked here even where the validation above is skipped.
        n_threads=(None if e.n_threads is None
                   else check_n_threads(operator.index(e.n_threads))),
        scoring=e.scoring,
        warmup_fraction=float(e.warmup_fraction),
        max_grad_norm=None if e.max_grad_norm is None else float(e.max_grad_norm),
        dropout=check_dropout(e.dropout if isinstance(e.dropout, Real)
                              else tuple(np.asarray(e.dropout).tolist()),
                              len(hidden_layer_sizes)),
        # The classifier has no regression loss.
        huber_delta=float(getattr(e, "huber_delta", 1.0)),
        quantile=float(getattr(e, "quantile", 0.5)),
    )
    if (params.learning_rate == "cosine" and params.solver in STOCHASTIC_SOLVERS
            and params.warmup_epochs >= params.max_iter):
        raise ValueError(f"warmup_fraction={e.warmup_fraction} warms up for all "
                         f"{params.max_iter} epochs of max_iter (round(warmup_fraction * "
                         "max_iter) epochs): the cosine schedule needs at least one more")
    if params.solver == "lbfgs" and any(params.dropout):
        raise ValueError(f"dropout={e.dropout!r} needs a stochastic solver ('sgd' or 'adam'): "
                         "L-BFGS's line search needs a deterministic loss")
    return params
