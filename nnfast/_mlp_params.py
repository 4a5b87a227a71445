"""The hyperparameters of ``MLPClassifier`` / ``MLPRegressor``, validated once per fit.

scikit-learn checks its MLP's parameters at ``fit`` (never in ``__init__``, so that ``clone``
and ``set_params`` keep them as given); so do these, with a message naming the parameter.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from ._validation import check_finite_real, check_int, check_n_threads

ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
SOLVERS = ("lbfgs", "sgd", "adam")
STOCHASTIC_SOLVERS = ("sgd", "adam")
SCHEDULES = ("constant", "invscaling", "adaptive")
REGRESSION_LOSSES = ("squared_error", "poisson")


@dataclass(frozen=True)
class MLPParams:
    """Every hyperparameter of one fit, checked and converted to plain Python values."""

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
    validation_fraction: float
    beta_1: float
    beta_2: float
    epsilon: float
    n_iter_no_change: float  # an int, or inf
    max_fun: int
    n_threads: object  # None or int


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_real(value, name, low, high=np.inf, low_open=False, high_open=False):
    """A finite real in the interval from low to high (open ends as flagged)."""
    value = check_finite_real(value, name)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = (("(" if low_open else "[") + f"{low}, {high}"
                    + (")" if high_open or high == np.inf else "]"))
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_hidden_layer_sizes(hidden):
    """The hidden widths as a tuple of ints >= 1 (an int is one layer)."""
    if isinstance(hidden, numbers.Integral) and not isinstance(hidden, (bool, np.bool_)):
        hidden = (hidden,)
    if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
        raise TypeError("hidden_layer_sizes must be an int or a sequence of layer widths, got "
                        f"{hidden!r}")
    return tuple(check_int(width, f"hidden_layer_sizes[{k}]", minimum=1)
                 for k, width in enumerate(hidden))


def check_params(estimator):
    """The estimator's MLP hyperparameters as an ``MLPParams``; raises on the first bad one."""
    e = estimator
    batch_size = e.batch_size
    if isinstance(batch_size, str):
        _check_choice(batch_size, "batch_size", ("auto",))
    else:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
    n_iter_no_change = e.n_iter_no_change
    if not (isinstance(n_iter_no_change, numbers.Real) and n_iter_no_change == np.inf):
        n_iter_no_change = check_int(n_iter_no_change, "n_iter_no_change", minimum=1)
    verbose = e.verbose
    if not isinstance(verbose, (bool, np.bool_)):
        verbose = check_int(verbose, "verbose", minimum=0)
    params = MLPParams(
        hidden_layer_sizes=check_hidden_layer_sizes(e.hidden_layer_sizes),
        activation=_check_choice(e.activation, "activation", ACTIVATIONS),
        solver=_check_choice(e.solver, "solver", SOLVERS),
        alpha=_check_real(e.alpha, "alpha", 0),
        batch_size=batch_size,
        learning_rate=_check_choice(e.learning_rate, "learning_rate", SCHEDULES),
        learning_rate_init=_check_real(e.learning_rate_init, "learning_rate_init", 0,
                                       low_open=True),
        power_t=_check_real(e.power_t, "power_t", 0),
        max_iter=check_int(e.max_iter, "max_iter", minimum=1),
        shuffle=_check_bool(e.shuffle, "shuffle"),
        tol=_check_real(e.tol, "tol", 0),
        verbose=bool(verbose),
        warm_start=_check_bool(e.warm_start, "warm_start"),
        momentum=_check_real(e.momentum, "momentum", 0, 1),
        nesterovs_momentum=_check_bool(e.nesterovs_momentum, "nesterovs_momentum"),
        early_stopping=_check_bool(e.early_stopping, "early_stopping"),
        validation_fraction=_check_real(e.validation_fraction, "validation_fraction", 0, 1,
                                        high_open=True),
        beta_1=_check_real(e.beta_1, "beta_1", 0, 1, high_open=True),
        beta_2=_check_real(e.beta_2, "beta_2", 0, 1, high_open=True),
        epsilon=_check_real(e.epsilon, "epsilon", 0, low_open=True),
        n_iter_no_change=n_iter_no_change,
        max_fun=check_int(e.max_fun, "max_fun", minimum=1),
        n_threads=None if e.n_threads is None else check_n_threads(e.n_threads),
    )
    if params.early_stopping and params.validation_fraction == 0:
        raise ValueError("validation_fraction must be > 0 with early_stopping=True, got 0")
    return params
