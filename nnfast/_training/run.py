"""``TrainingRun``: one fit of the general path on validated arrays, a chunk of epochs at a
time.

It holds what the fit needs for its whole length, made once: the backend's runner (its
workspace), the thread policy's team and BLAS cap, and the buffer of row orders; it trains
the copies of its ``FitTransaction`` (parameters, optimizer state). ``Network.fit`` drives
one between its reports (``nnfast._training.driver``), nnfast's scikit-learn estimators
between their stopping decisions. Nothing reaches the network before the transaction's
``commit``, so a fit that fails or is interrupted leaves it as it was.
"""

import contextlib
import dataclasses

import numpy as np

from .._validation import check_fits_in_memory
from . import threads as thread_policy
from .backends import backend_named
from .options import check_model_options, fit_plan
from .sparse import is_sparse
from .transaction import FitTransaction, TrainingDivergedError

# Shuffled mini-batches: at most this many row indices of epoch orders are drawn at once.
# Kept small so that a fit's memory does not depend on its length (one buffer per fit).
MAX_ORDER_ENTRIES = 1 << 16


def order_rows(iterations, n_rows):
    """Epochs per buffer of shuffled row orders (one buffer per fit, of bounded size)."""
    return max(1, min(iterations, MAX_ORDER_ENTRIES // n_rows))


def row_inputs(X):
    """The first layer's inputs per row that a step multiplies: None (all of them) for dense
    X, the mean count of non-zeros per row (at least 1) for sparse X."""
    if not is_sparse(X):
        return None
    return max(1, -(-X.nnz // X.shape[0]))


class TrainingRun:
    """A fit of the general path: ``run`` trains the next chunk of epochs.

    Parameters
    ----------
    transaction : FitTransaction
        Entered: its ``params`` and ``optimizer_state`` are what the run trains.
    backend : nnfast._training.backends.Reference or Compiled
    X, y, sample_weight : validated arrays (``Network.fit``'s), kept, not copied.
    max_epochs : int
        The most epochs the caller will run (it sizes the row-order buffer).

    Attributes
    ----------
    params : ndarray
        The parameters being trained (the transaction's copy).
    state : OptimizerState
        The optimizer state being trained; its ``learning_rate`` may be set between chunks
        (scikit-learn's "adaptive" schedule).
    threads : FitThreads
        The threads to hold while the run trains, refreshed before each backend call.
    done : int
        Epochs run so far.
    max_chunk : int
        The most epochs one ``run`` call takes.
    """

    def __init__(self, transaction, backend, X, y, sample_weight, max_epochs):
        network, plan = transaction.network, transaction.plan
        self.transaction = transaction
        self.plan = plan
        self.params = transaction.params
        self.state = transaction.optimizer_state
        self._fill_orders = transaction.fill_orders
        n_rows = X.shape[0]
        inputs = row_inputs(X)
        team_step = thread_policy.takes_team_step(plan, inputs is not None)
        self.kernel_threads = thread_policy.kernel_blocks(network, backend, plan.batch_size,
                                                          inputs, team_step=team_step,
                                                          general_path=True)
        # Activations, deltas and gathered rows per batch; the params copy and a transposed
        # gradient, a gradient and a transpose per row block of the team step
        # (nnfast._training.layout), and the optimizer state.
        blocks = self.kernel_threads if team_step else 1
        check_fits_in_memory(
            plan.dtype.itemsize * (3 * plan.batch_size * sum(plan.sizes[1:])
                                   + (2 + 2 * blocks) * self.params.size + plan.state_size),
            f"training on batches of {plan.batch_size} rows")
        self.threads = thread_policy.fit_threads(network, backend, self.kernel_threads,
                                                 plan.batch_size, inputs)
        self._run = backend.make_runner(plan, X, y, sample_weight, self.kernel_threads,
                                        thread_policy.check_every(plan.sizes, plan.batch_size))
        self._order_buffer = (np.empty((order_rows(max_epochs, n_rows), n_rows),
                                       dtype=np.intp) if plan.shuffled else None)
        self.max_chunk = min(
            thread_policy.epochs_between_team_checks(plan.sizes, self.kernel_threads, n_rows,
                                                     inputs),
            thread_policy.MAX_CHUNK_EPOCHS if self._order_buffer is None
            else self._order_buffer.shape[0])
        self.done = 0

    def run(self, n_epochs, through_nonfinite=False):
        """Trains the next n_epochs (1 to ``max_chunk``) epochs in one backend call; returns
        their losses (float64 array). TrainingDivergedError when one is not finite, unless
        ``through_nonfinite``: then every epoch runs, as scikit-learn's MLP runs them (the
        backend stops after an epoch whose loss is not finite; it is called again for the
        rest)."""
        orders = (self._fill_orders(self._order_buffer[:n_epochs]) if self.plan.shuffled
                  else None)
        self.threads.refresh()
        losses, epochs_done, diverged = self._run(self.params, self.state, n_epochs, orders)
        while through_nonfinite and diverged and epochs_done + 1 < n_epochs:
            start = epochs_done + 1
            self.threads.refresh()
            rest, done, diverged = self._run(self.params, self.state, n_epochs - start,
                                             None if orders is None else orders[start:])
            losses[start:] = rest
            epochs_done = start + done
        if diverged and not through_nonfinite:
            raise TrainingDivergedError(
                f"training diverged at iteration {self.done + epochs_done}: the loss is no "
                f"longer finite (learning rate {self.state.learning_rate} too large, or a "
                "batch whose sample weights are all zero?); the network is left as it was "
                "before this fit")
        self.done += n_epochs
        return losses

    def commit(self, history):
        """Writes what the run trained into the network (the transaction's ``commit``)."""
        self.transaction.commit(history, self.done)


@contextlib.contextmanager
def training_run(network, X, y, sample_weight, *, batch_size, max_epochs, resume, orders,
                 dropout_seed=None):
    """A ``TrainingRun`` of the network for nnfast's scikit-learn estimators, which validate
    their input themselves (``nnfast.sklearn._mlp``): ``Network.fit``'s general path
    without its checks and reports.

    X, y : C-contiguous 2-D arrays of the network's dtype, finite, y in the output's range
        (what ``fit`` would make of them).
    sample_weight : a C-contiguous (n_rows,) array of the network's dtype, finite, or None:
        the estimators take scikit-learn's weights, negative ones included (a batch whose
        weights sum to zero gives a non-finite loss).
    batch_size : int, 1 to n_rows.
    max_epochs : int >= 1
        The most epochs the caller will run (it sizes the row-order buffer).
    resume : bool
        As for ``fit``.
    orders : callable or None
        As for ``fit``: shuffled epochs take their orders from it (when batch_size is below
        n_rows); None is stored order.
    dropout_seed : int or None
        The seed of the fit's dropout masks, when the network has dropout (the estimators
        draw it from their ``random_state``); None draws it from the network's random state.

    Yields the run inside its fit transaction; the network keeps what it trained only when
    the block ends without an exception, as after ``fit`` (a fit without reports: its
    ``history`` is empty).
    """
    check_model_options(network)
    shuffled = orders is not None and batch_size < X.shape[0]
    plan = fit_plan(network, None, resume, batch_size, shuffled, sample_weight is not None)
    if plan.drops and dropout_seed is not None:
        plan = dataclasses.replace(plan, dropout_seed=int(dropout_seed))
    with FitTransaction(network, plan, resume=resume, orders=orders) as transaction:
        run = TrainingRun(transaction, backend_named(network.backend), X, y, sample_weight,
                          max_epochs)
        with run.threads:
            yield run
        run.commit([])
