"""A fit as one transaction: it trains copies and writes them into the network all at once,
or not at all.

What a fit changes in a network is its parameters (``params``), the random state it draws
row orders from (``random_state``), its optimizer state, history and ``iterations_run``.
``FitTransaction`` holds the network's fit lock from start to end, so that fits of one network
run one at a time (different networks never wait for each other); it starts from copies of
those, taken under the network's state lock, which ``commit`` takes again to write the
results back, so that a reader (``predict``, a snapshot) never sees a half-written update. A
fit that raises, ``KeyboardInterrupt`` included, never reaches ``commit``: the network stays
as it was, its random state included.

``Network.fit``, the estimators' runs (``nnfast._training.run``) and ``nnfast.dask.fit`` all
train through one.
"""

import copy
import dataclasses
import functools
import threading
import weakref

import numpy as np

from .plan import OptimizerState


class TrainingDivergedError(FloatingPointError):
    """The training error stopped being finite; the network keeps its pre-fit weights."""


# Tracebacks and pickles name it where users import it from.
TrainingDivergedError.__module__ = "nnfast"

# Per-network locks, kept outside the instances so that pickling and copying need no help.
_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def locks_of(network):
    """(fit lock, state lock) of a network."""
    with _LOCKS_GUARD:
        locks = _LOCKS.get(network)
        if locks is None:
            locks = _LOCKS[network] = (threading.Lock(), threading.Lock())
        return locks


def snapshot(network):
    """A copy of the network's parameters, never taken halfway through a fit's write-back."""
    with locks_of(network)[1]:
        return network.params.copy()


class FitTransaction:
    """One fit of a network: a context manager holding its fit lock, with the copies the fit
    trains.

    Parameters
    ----------
    network : nnfast.Network
    plan : nnfast._training.plan.FitPlan
    resume : bool
        Start from a copy of the network's optimizer state (else a fresh one).
    learning_rate : float or None
        With ``resume``, replaces the resumed state's current rate (scikit-learn's
        "adaptive" schedule lowers it this way).
    orders : callable or None
        The caller's row orders for shuffled epochs (``Network.fit``'s ``orders``); None
        draws them from a copy of the network's random state.

    Attributes (from ``__enter__``)
    ----------
    params : ndarray
        A copy of the network's parameters, for the fit to train.
    optimizer_state : OptimizerState
        The state the fit trains (a copy, or fresh).
    fill_orders : callable or None
        ``fill_orders(buffer)`` writes the next epochs' row orders into an (n_epochs, n_rows)
        buffer and returns it; None when the plan is not shuffled.
    """

    def __init__(self, network, plan, *, resume=False, learning_rate=None, orders=None):
        self.network = network
        self.plan = plan
        self._resume = resume
        self._learning_rate = learning_rate
        self._orders = orders
        self._fit_lock, self._state_lock = locks_of(network)

    def __enter__(self):
        self._fit_lock.acquire()
        try:
            # Under the fit lock: the state of the fit before, not of one running.
            with self._state_lock:
                self.params = self.network.params.copy()
            self._optimizer_state = None
            self._random_state, self.fill_orders = self._order_source()
            if self.plan.drops and self.plan.dropout_seed is None:
                self.plan = dataclasses.replace(self.plan,
                                                dropout_seed=self._draw_dropout_seed())
        except BaseException:
            self._fit_lock.release()
            raise
        return self

    def __exit__(self, *exc_info):
        self._fit_lock.release()
        return False

    @property
    def optimizer_state(self):
        """The optimizer state the fit trains: a copy of the network's (``resume``) or a fresh
        one, made when first asked for (the original's fused step has none)."""
        if self._optimizer_state is None:
            self._optimizer_state = self._start_state()
        return self._optimizer_state

    def _start_state(self):
        plan, previous = self.plan, self.network.optimizer_state
        if not self._resume or previous is None:
            return OptimizerState.fresh(plan)
        if previous.values.size != plan.state_size or previous.values.dtype != plan.dtype:
            raise ValueError(f"resume=True, but the stored optimizer state ({previous}) does not "
                             f"belong to this network's optimizer ({plan.optimizer!r}, "
                             f"{plan.state_size} values of {plan.dtype}); fit with resume=False")
        state = previous.copy()
        if self._learning_rate is not None:
            state.learning_rate = self._learning_rate
        return state

    def _order_source(self):
        """(the random state the network keeps after the fit, fill_orders). The network's
        own draws come from a copy of its random state, so that a failed fit leaves its
        stream untouched; the caller's orders leave it alone."""
        random_state = self.network.random_state
        if not self.plan.shuffled:
            return random_state, None
        if self._orders is not None:
            return random_state, functools.partial(_callers_orders, self._orders)
        random_state = copy.deepcopy(random_state)
        return random_state, functools.partial(_draw_epoch_orders, random_state)

    def _draw_dropout_seed(self):
        """The fit's dropout seed, the first draw of the fit's copy of the random state
        (copied here when the row orders did not need one), before any row order."""
        if self._random_state is self.network.random_state:
            self._random_state = copy.deepcopy(self._random_state)
        return int(self._random_state.randint(0, 2**63, dtype=np.int64))

    def commit(self, history, iterations_run, params=None, hint=""):
        """Writes the trained parameters (``params``, by default the transaction's copy),
        random state and optimizer state into the network, with the fit's history and
        iterations run. TrainingDivergedError, writing nothing, when a parameter is not
        finite; ``hint`` is added to its message."""
        params = self.params if params is None else params
        if not np.isfinite(params).all():
            raise TrainingDivergedError(
                f"training diverged: weights became infinite{hint}; the network is left as "
                "it was before this fit")
        network = self.network
        with self._state_lock:
            network.params[...] = params
            network.random_state = self._random_state
            network.history = history
            network.iterations_run = iterations_run
            if self.plan.state_size:
                network.optimizer_state = self.optimizer_state


def _draw_epoch_orders(random_state, orders):
    """Fills each row of orders with the next epoch's row order drawn from random_state
    (the sequence random_state.permutation(n_rows) would give), in place."""
    for order in orders:
        order[...] = np.arange(orders.shape[1])
        random_state.shuffle(order)
    return orders


def _callers_orders(orders, buffer):
    """Fills buffer by the caller's ``orders(buffer)``, then checks that each of its rows
    is a permutation of the row indices (so the kernel never reads outside X and no row is
    skipped or repeated)."""
    orders(buffer)
    n_rows = buffer.shape[1]
    # A row of n_rows values is a permutation when they are all row indices and each index
    # is among them. Marking the indices seen is linear, where sorting each row is not (a
    # few percent of a shuffled fit's time).
    in_range = (buffer >= 0) & (buffer < n_rows)
    seen = np.zeros(buffer.shape, dtype=bool)
    np.put_along_axis(seen, np.where(in_range, buffer, 0), True, axis=1)
    bad = np.flatnonzero(~(in_range.all(axis=1) & seen.all(axis=1)))
    if bad.size:
        raise ValueError(f"orders must fill each row of its (n_epochs, n_rows) = "
                         f"{buffer.shape} argument with a permutation of range({n_rows}); "
                         f"row {bad[0]} is not: {_preview(buffer[bad[0]])}")
    return buffer


def _preview(values, limit=8):
    """The first few values of a 1-D array, for a message."""
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"
