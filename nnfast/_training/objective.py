"""``FullBatchObjective``: a network's full-batch loss and gradient on fixed data, evaluated
many times at points the caller chooses.

L-BFGS (scikit-learn's ``solver="lbfgs"``) evaluates the loss and gradient of all rows a
hundred times or more per fit. ``Network.loss_gradient`` is one evaluation with all of its
set-up: validating and converting the inputs, the plan, a copy of the parameters, the
backend's config and workspace, the thread count and BLAS cap. ``full_batch_objective`` does
that set-up (on validated inputs) once and returns this object, so that each evaluation is
the backend's computation alone (``make_loss_gradient`` of the runner contract,
``nnfast._training.plan``).

The point lives in ``params`` (the params layout of ``nnfast._training.layout``, the
network's dtype) and the gradient lands in ``grad``; ``nnfast._training.layout.PackedLayout``
moves them to and from scikit-learn's packed float64 vector.
"""

import numpy as np

from .._validation import check_sample_weight
from . import threads as thread_policy
from .backends import backend_named
from .options import check_model_options, fit_plan
from .run import row_inputs
from .transaction import snapshot


def full_batch_objective(network, X, y, sample_weight=None, weights_checked=False):
    """The full-batch loss and gradient of the network's model on (X, y) as a
    ``FullBatchObjective``: the plan, the backend's buffers, the thread count and the BLAS
    cap are decided here, once. Its ``params`` start as a copy of the network's.

    For ``Network.loss_gradient`` and nnfast's scikit-learn estimators, which validate X and
    y themselves.

    Parameters
    ----------
    network : nnfast.Network
    X, y : C-contiguous 2-D arrays of the network's dtype, finite, y in the output's range
        (what ``loss_gradient`` makes of them); kept, not copied.
    sample_weight : as for ``Network.loss_gradient`` (checked here), or None.
    weights_checked : bool
        sample_weight is already as the estimators take it (any sign): not checked again.
    """
    check_model_options(network)
    if sample_weight is not None and not weights_checked:
        sample_weight = check_sample_weight(sample_weight, X.shape[0], network.dtype)
    n_rows = X.shape[0]
    plan = fit_plan(network, None, False, n_rows, False, sample_weight is not None)
    backend = backend_named(network.backend)
    inputs = row_inputs(X)
    blocks = thread_policy.kernel_blocks(network, backend, n_rows, inputs, general_path=True)
    evaluate = backend.make_loss_gradient(plan, X, y, sample_weight, blocks)
    return FullBatchObjective(evaluate, snapshot(network),
                              thread_policy.fit_threads(network, backend, blocks, n_rows, inputs))


class FullBatchObjective:
    """The full-batch loss and gradient of one network's model on one set of rows.

    Built by ``full_batch_objective``; the inputs it was built from are kept, not copied, and
    must not change while it is used.

    Attributes
    ----------
    params : ndarray (P,)
        The point of the next evaluation, flat in the params layout, of the network's dtype;
        callers write into it. It starts as a copy of the network's parameters, which the
        objective never changes.
    grad : ndarray like params
        The gradient G of the last evaluation (minus the plain step's direction).
    """

    def __init__(self, evaluate, params, threads):
        self._evaluate = evaluate
        self._threads = threads
        self.params = params
        self.grad = np.empty_like(params)

    def __call__(self):
        """Evaluates at ``params``: returns the loss (float) and writes the gradient to
        ``grad``. A loss or gradient that is not finite is returned as such."""
        self._threads.refresh()
        return self._evaluate(self.params, self.grad)

    def thread_limits(self):
        """A context manager that holds the threads the evaluations run with
        (``nnfast._training.threads.fit_threads``: one BLAS thread while the kernel runs its
        own, and the kernel's team, re-decided before each evaluation).

        Taken once around all of an optimizer's evaluations rather than per evaluation:
        applying and restoring BLAS's thread count costs tens of microseconds each time.
        """
        return self._threads
