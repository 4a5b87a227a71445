"""Optimizers a ``Network`` can train with: small frozen configurations, validated once.

Each is a description, not a running optimizer: the state an optimizer accumulates
(velocities, moments, step count, current learning rate) belongs to the network
(``Network.optimizer_state``) so that it can be resumed, copied, saved and pickled with it.
The arithmetic is scikit-learn's (``sklearn/neural_network/_stochastic_optimizers.py``) and
is written out in ``nnfast.reference``::

    GradientStep:  param -= learning_rate * G                         (the original's step)
    SGD:           v = momentum * v - lr * G
                   param += (momentum * v - lr * G) if nesterov else v
    Adam:          m = beta_1 * m + (1 - beta_1) * G;  v = beta_2 * v + (1 - beta_2) * G**2
                   lr_t = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
                   param += -lr_t * m / (sqrt(v) + epsilon)
"""

import dataclasses
import math
import numbers

import numpy as np

from ._kernels.codes import Schedule, names

__all__ = ["GradientStep", "SGD", "Adam", "SCHEDULES"]

# SGD learning-rate schedules, scikit-learn's names (its ``learning_rate`` parameter), in the
# order of their codes (defined once, in nnfast/_kernels/codes.pxd).
SCHEDULES = names(Schedule)


def _real(owner, name, value):
    """value as a finite float; bools and non-numbers are a TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got "
                        f"{type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value}")
    return value


def _in_range(owner, name, value, low, high, high_closed):
    """Checks low <= value < high (or <= high when high_closed); high None is unbounded."""
    above_high = high is not None and (value > high if high_closed else value >= high)
    if value < low or above_high:
        bracket = "]" if high_closed else ")"
        upper = "inf" if high is None else high
        raise ValueError(f"{owner}: {name} must be in [{low}, {upper}{bracket}, got {value}")


def _positive(owner, name, value):
    if value <= 0:
        raise ValueError(f"{owner}: {name} must be > 0, got {value}")


def _set(instance, name, value):
    # Frozen dataclasses forbid assignment; __post_init__ stores the coerced values this way.
    object.__setattr__(instance, name, value)


@dataclasses.dataclass(frozen=True)
class GradientStep:
    """The original's step: ``param -= learning_rate * G`` with no state.

    With ``Network``'s defaults (output ``"original"``, reduction ``"sum"``) this is the 2015
    program's ``W += learning_rate * (l.T @ delta)``.

    Parameters
    ----------
    learning_rate : float
        Any finite number (0 leaves the weights unchanged; the original uses 1.0).
    """

    learning_rate: float = 1.0

    def __post_init__(self):
        _set(self, "learning_rate", _real("GradientStep", "learning_rate", self.learning_rate))


@dataclasses.dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent with (Nesterov) momentum, as scikit-learn's ``sgd`` solver.

    Parameters
    ----------
    learning_rate : float > 0
        The initial rate (scikit-learn's ``learning_rate_init``).
    momentum : float in [0, 1]
    nesterov : bool
        Nesterov's momentum (scikit-learn's ``nesterovs_momentum``).
    schedule : {"constant", "invscaling", "adaptive"}
        ``"invscaling"``: after each epoch, ``lr = learning_rate / (samples_seen + 1) **
        power_t``; ``"adaptive"`` and ``"constant"`` keep the rate (the caller lowers it for
        ``"adaptive"`` through ``fit(learning_rate=...)``, as scikit-learn's estimator does).
    power_t : float >= 0
        Exponent of ``"invscaling"``.
    """

    learning_rate: float = 0.001
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "constant"
    power_t: float = 0.5

    def __post_init__(self):
        learning_rate = _real("SGD", "learning_rate", self.learning_rate)
        _positive("SGD", "learning_rate", learning_rate)
        momentum = _real("SGD", "momentum", self.momentum)
        _in_range("SGD", "momentum", momentum, 0.0, 1.0, high_closed=True)
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise TypeError(f"SGD: nesterov must be True or False, got {self.nesterov!r}")
        if not isinstance(self.schedule, str):
            raise TypeError(f"SGD: schedule must be a string, one of {SCHEDULES}, got "
                            f"{self.schedule!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"SGD: unknown schedule {self.schedule!r}; choose one of "
                             f"{SCHEDULES}")
        power_t = _real("SGD", "power_t", self.power_t)
        _in_range("SGD", "power_t", power_t, 0.0, None, high_closed=False)
        _set(self, "learning_rate", learning_rate)
        _set(self, "momentum", momentum)
        _set(self, "nesterov", bool(self.nesterov))
        _set(self, "power_t", power_t)


@dataclasses.dataclass(frozen=True)
class Adam:
    """Adam with bias correction, as scikit-learn's ``adam`` solver.

    Parameters
    ----------
    learning_rate : float > 0
        scikit-learn's ``learning_rate_init``.
    beta_1, beta_2 : float in [0, 1)
        Decay rates of the first and second moment estimates.
    epsilon : float > 0
        Added to ``sqrt(v)`` in the denominator.
    """

    learning_rate: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8

    def __post_init__(self):
        learning_rate = _real("Adam", "learning_rate", self.learning_rate)
        _positive("Adam", "learning_rate", learning_rate)
        beta_1 = _real("Adam", "beta_1", self.beta_1)
        _in_range("Adam", "beta_1", beta_1, 0.0, 1.0, high_closed=False)
        beta_2 = _real("Adam", "beta_2", self.beta_2)
        _in_range("Adam", "beta_2", beta_2, 0.0, 1.0, high_closed=False)
        epsilon = _real("Adam", "epsilon", self.epsilon)
        _positive("Adam", "epsilon", epsilon)
        _set(self, "learning_rate", learning_rate)
        _set(self, "beta_1", beta_1)
        _set(self, "beta_2", beta_2)
        _set(self, "epsilon", epsilon)
