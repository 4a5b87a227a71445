"""``FullBatchObjective``: a network's full-batch loss and gradient on fixed data, evaluated
many times at points the caller chooses.

L-BFGS (scikit-learn's ``solver="lbfgs"``) evaluates the loss and gradient of all rows a
hundred times or more per fit. ``Network.loss_gradient`` is one evaluation with all of its
set-up: validating and converting the inputs, the plan, a copy of the parameters, the
backend's config and workspace, the thread count and BLAS cap. ``Network._objective`` does
that set-up (on validated inputs) once and returns this object, so that each evaluation is
the backend's computation alone (``make_loss_gradient`` of the runner contract,
``nnfast._training.plan``).

The point lives in ``params`` (the params layout of ``nnfast._training.layout``, the network's dtype)
and the gradient lands in ``grad``; ``nnfast._training.layout.PackedLayout`` moves them to and from
scikit-learn's packed float64 vector.
"""

import numpy as np


class FullBatchObjective:
    """The full-batch loss and gradient of one network's model on one set of rows.

    Built by ``Network._objective``; the inputs it was built from are kept, not copied, and
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
        (``Network._fit_threads``: one BLAS thread while the kernel runs its own, and the
        kernel's team, re-decided before each evaluation).

        Taken once around all of an optimizer's evaluations rather than per evaluation:
        applying and restoring BLAS's thread count costs tens of microseconds each time.
        """
        return self._threads
