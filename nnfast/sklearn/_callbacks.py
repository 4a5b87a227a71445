"""scikit-learn's callback API (``sklearn.callback``, 1.9) for ``MLPClassifier`` /
``MLPRegressor``.

The estimators take ``set_callbacks`` from scikit-learn's ``CallbackSupportMixin`` and build
the task tree scikit-learn's own supported estimators build: a root task ("fit") whose
subtasks are the iterations, here the stochastic solvers' epochs ("epoch") or L-BFGS's
iterations ("lbfgs-iter", as ``LogisticRegression``'s). Every task's ``on_fit_task_begin``
has its ``on_fit_task_end``; each hook gets the fit's X, y and ``{"sample_weight": ...}``
(None without weights), and ``fitted_estimator`` a copy of the estimator holding the weights
at that point (built only when a callback's hook asks for it).

A fit without callbacks (and outside a meta-estimator that propagates them) makes no
context and calls nothing (the estimator does not call ``fit_callbacks``), and the solvers
run their epochs in chunks as before.
"""

from sklearn.callback._callback_support import callback_management_context

__all__ = ["callback_management_context", "fit_callbacks"]

# The subtask names of the solvers' iterations.
EPOCH_TASK = "epoch"
LBFGS_TASK = "lbfgs-iter"


def fit_callbacks(estimator, context, X, y, sample_weight, task_name, weights, active):
    """The fit's callbacks (``FitCallbacks``) on the estimator's root ``context`` (its
    ``_init_callback_context``), the root task begun.

    ``weights()`` returns (coefs, intercepts) of the weights being trained now; ``active``:
    whether the estimator has callbacks of its own (else the context only joins a
    meta-estimator's task tree, and no iteration reports).
    """
    callbacks = FitCallbacks(estimator, context, X, y, sample_weight, task_name, weights,
                             active)
    context.call_on_fit_task_begin(estimator=estimator, X=X, y=y,
                                   metadata=callbacks.metadata)
    return callbacks


class FitCallbacks:
    """One fit's root callback context and the subtasks of its iterations."""

    def __init__(self, estimator, context, X, y, sample_weight, task_name, weights, active):
        self.estimator = estimator
        self.context = context
        self.X = X
        self.y = y
        self.metadata = None if sample_weight is None else {"sample_weight": sample_weight}
        self.task_name = task_name
        self.weights = weights
        self._task = None
        self.active = active

    def _reconstruction(self, extra=None):
        """A function giving the attributes of a fitted estimator at this point: copies of
        the current weights (the hooks may keep the estimator they are given)."""
        def attributes():
            coefs, intercepts = self.weights()
            return {"coefs_": [w.copy() for w in coefs],
                    "intercepts_": [b.copy() for b in intercepts], **(extra or {})}
        return attributes

    def begin(self, iteration):
        """Begins iteration ``iteration``'s subtask (counted from 0 in this fit)."""
        if not self.active:
            return
        self._task = self.context.subcontext(task_name=self.task_name)
        self._task.call_on_fit_task_begin(
            estimator=self.estimator, X=self.X, y=self.y, metadata=self.metadata,
            reconstruction_attributes=self._reconstruction())

    def end(self, iteration, record=None):
        """Ends the current subtask; True when a callback asks the fit to stop.

        ``record``: the stochastic fit's ``StochasticRecord``, whose counts the fitted
        estimator reports (``n_iter_``, ``loss_``, ``loss_curve_``)."""
        task, self._task = self._task, None
        if task is None:
            return False
        extra = None
        if record is not None:
            extra = {"n_iter_": record.n_iter, "loss_": record.loss,
                     "loss_curve_": list(record.loss_curve)}
        return task.call_on_fit_task_end(
            estimator=self.estimator, X=self.X, y=self.y, metadata=self.metadata,
            reconstruction_attributes=self._reconstruction(extra))

    def close_iteration(self):
        """Ends a subtask begun but never run (L-BFGS's after its last iteration, as
        scikit-learn's ``LogisticRegression`` ends it: an empty task)."""
        if self._task is not None:
            task, self._task = self._task, None
            task.call_on_fit_task_end(estimator=self.estimator)

    def finish(self):
        """Ends the root task with the fitted estimator."""
        self.context.call_on_fit_task_end(estimator=self.estimator, X=self.X, y=self.y,
                                          metadata=self.metadata,
                                          reconstruction_attributes={})
