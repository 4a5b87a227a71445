"""scikit-learn's callback API (``sklearn.callback``) on the MLP estimators.

The reference is scikit-learn's own ``LogisticRegression`` (solver "lbfgs"), the estimator
of scikit-learn 1.9 whose iterations report to callbacks: the MLP's L-BFGS fit must give a
callback the same sequence of hooks, tasks and arguments, and a stochastic fit the same with
one "epoch" subtask per epoch. What a hook is handed (``fitted_estimator``, the scores of
``ScoringMonitor``) is held to scikit-learn's ``MLPClassifier`` trained as many epochs.
"""

import pickle
import warnings

import numpy as np
import pytest
import sklearn.neural_network as sk
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.callback import ProgressBar, ScoringMonitor
from sklearn.callback._callback_context import CallbackContext, get_context_path
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nnfast.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = {"hidden_layer_sizes": (5,), "random_state": 0, "learning_rate_init": 0.05}
X, Y = make_classification(n_samples=120, n_features=5, n_informative=3, random_state=0)


class Recorder:
    """Records every hook call: what scikit-learn's contexts and arguments look like."""

    def __init__(self, stop_after=None):
        self.events = []
        self.fitted = []
        self.stop_after = stop_after

    def setup(self, estimator, context):
        self.events.append(("setup", context.task_name))

    def teardown(self, estimator, context):
        self.events.append(("teardown", context.task_name))

    def _record(self, hook, context, X, y, metadata, fitted_estimator):
        self.events.append((hook, context.task_name, len(get_context_path(context)),
                            context.max_subtasks, X is not None, y is not None,
                            None if metadata is None else sorted(metadata),
                            fitted_estimator is not None))
        self.fitted.append((hook, context.task_name, fitted_estimator))

    def on_fit_task_begin(self, estimator, context, *, X=None, y=None, metadata=None,
                          fitted_estimator=None):
        self._record("begin", context, X, y, metadata, fitted_estimator)

    def on_fit_task_end(self, estimator, context, *, X=None, y=None, metadata=None,
                        fitted_estimator=None):
        self._record("end", context, X, y, metadata, fitted_estimator)
        ends = sum(1 for e in self.events if e[:2] == ("end", "epoch"))
        return self.stop_after is not None and ends >= self.stop_after


def _events(estimator, sample_weight=None):
    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.set_callbacks(recorder).fit(X, Y, sample_weight=sample_weight)
    return recorder


@pytest.mark.parametrize("weighted", [False, True])
def test_lbfgs_gives_callbacks_what_logistic_regression_gives(weighted):
    sample_weight = np.linspace(0.5, 1.5, len(Y)) if weighted else None
    ours = MLPClassifier(**SMALL, solver="lbfgs", max_iter=3)
    theirs = LogisticRegression(max_iter=3)
    ours_events = _events(ours, sample_weight).events
    theirs_events = _events(theirs, sample_weight).events
    assert ours.n_iter_ == theirs.n_iter_[0] == 3
    assert ours_events == theirs_events


def test_epochs_are_subtasks_as_logistic_regressions_iterations():
    ours = _events(MLPClassifier(**SMALL, max_iter=3)).events
    theirs = _events(LogisticRegression(max_iter=3)).events
    # LogisticRegression's last subtask is an empty one (SciPy's callback comes after an
    # iteration); epochs have none.
    empty_end = ("end", "lbfgs-iter", 2, 0, False, False, None, False)
    assert theirs[-3] == empty_end
    expected = [tuple("epoch" if field == "lbfgs-iter" else field for field in event)
                for event in theirs[:-4] + theirs[-2:]]
    # The root's max_subtasks: max_iter epochs (LogisticRegression: max_iter + 1).
    expected = [e[:3] + (3,) + e[4:] if e[1] == "fit" and e[0] in ("begin", "end") else e
                for e in expected]
    assert ours == [e for e in expected if e != empty_end]


def test_each_epochs_fitted_estimator_is_scikit_learns_model_after_that_epoch():
    recorder = _events(MLPClassifier(**SMALL, max_iter=4))
    ends = [f for hook, task, f in recorder.fitted if (hook, task) == ("end", "epoch")]
    begins = [f for hook, task, f in recorder.fitted if (hook, task) == ("begin", "epoch")]
    assert len(ends) == len(begins) == 4
    for k, fitted in enumerate(ends):
        theirs = sk.MLPClassifier(**SMALL, max_iter=k + 1).fit(X, Y)
        for a, b in zip(fitted.coefs_ + fitted.intercepts_, theirs.coefs_ + theirs.intercepts_):
            assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        assert fitted.n_iter_ == k + 1
        assert_allclose(fitted.loss_curve_, theirs.loss_curve_, rtol=1e-9)
        np.testing.assert_array_equal(fitted.predict(X), theirs.predict(X))
        if k + 1 < len(begins):
            # The next epoch begins from this one's weights.
            for a, b in zip(begins[k + 1].coefs_, fitted.coefs_):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_scoring_monitor_logs_each_iterations_score(solver):
    monitor = ScoringMonitor(scoring="accuracy")
    ours = MLPClassifier(**SMALL, solver=solver, max_iter=4).set_callbacks(monitor).fit(X, Y)
    rows = monitor.get_logs().data
    epochs = [row for row in rows if row["task_name"] != "fit"]
    assert len(epochs) == ours.n_iter_
    for k, row in enumerate(epochs):
        theirs = sk.MLPClassifier(**SMALL, solver=solver, max_iter=k + 1).fit(X, Y)
        assert row["accuracy"] == accuracy_score(Y, theirs.predict(X))
    root = [row for row in rows if row["task_name"] == "fit"]
    assert root[0]["accuracy"] == accuracy_score(Y, ours.predict(X))


@pytest.mark.parametrize("Estimator, solver", [(MLPClassifier, "adam"),
                                               (MLPClassifier, "lbfgs"),
                                               (MLPRegressor, "sgd")])
def test_progress_bar_reports(Estimator, solver, capsys):
    target = Y if Estimator is MLPClassifier else X[:, 0]
    with_bar = Estimator(**SMALL, solver=solver, max_iter=3).set_callbacks(ProgressBar())
    with_bar.fit(X, target)
    # Every task begun was ended: the bar is complete (as scikit-learn's own tests check).
    out = capsys.readouterr().out
    assert f"{Estimator.__name__} - fit" in out and "100%" in out
    without = Estimator(**SMALL, solver=solver, max_iter=3).fit(X, target)
    for a, b in zip(with_bar.coefs_, without.coefs_):
        np.testing.assert_array_equal(a, b)


def test_progress_bar_through_a_pipeline():
    model = make_pipeline(StandardScaler(), MLPClassifier(**SMALL, max_iter=3))
    model.set_callbacks(ProgressBar(max_propagation_depth=None))
    model.fit(X, Y)
    assert model[-1].n_iter_ == 3


def test_a_callback_can_stop_the_fit():
    recorder = Recorder(stop_after=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = MLPClassifier(**SMALL, max_iter=10).set_callbacks(recorder).fit(X, Y)
    assert model.n_iter_ == 2 and len(model.loss_curve_) == 2
    theirs = sk.MLPClassifier(**SMALL, max_iter=2).fit(X, Y)
    for a, b in zip(model.coefs_, theirs.coefs_):
        assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_partial_fit_is_one_epoch_task():
    recorder = Recorder()
    model = MLPClassifier(**SMALL).set_callbacks(recorder)
    model.partial_fit(X, Y, classes=[0, 1])
    tasks = [e[:2] for e in recorder.events]
    assert tasks == [("setup", "fit"), ("begin", "fit"), ("begin", "epoch"), ("end", "epoch"),
                     ("end", "fit"), ("teardown", "fit")]


def test_without_callbacks_no_context_is_made(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a callback context was made")

    monkeypatch.setattr(CallbackContext, "_from_estimator", classmethod(refuse))
    MLPClassifier(**SMALL, max_iter=3).fit(X, Y)
    MLPClassifier(**SMALL, solver="lbfgs", max_iter=3).fit(X, Y)


class _Failing(Recorder):
    def on_fit_task_end(self, estimator, context, **kwargs):
        super().on_fit_task_end(estimator, context, **kwargs)
        if context.task_name == "epoch" and context.task_id == 1:
            raise KeyboardInterrupt


def test_a_callback_failing_mid_fit_leaves_the_model_as_it_was_and_is_torn_down():
    model = MLPClassifier(**SMALL, max_iter=3, warm_start=True).fit(X, Y)
    before = dict(model.__dict__)
    failing = _Failing()
    model.set_callbacks(failing)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, Y)
    assert failing.events[-1] == ("teardown", "fit")
    assert {k: v for k, v in model.__dict__.items() if k != "_skl_callbacks"} == before
    assert not hasattr(model, "_callback_fit_ctx")


def test_callbacks_are_cloned_and_pickled_with_the_estimator():
    monitor = ScoringMonitor(scoring="accuracy")
    model = MLPClassifier(**SMALL, max_iter=2).set_callbacks(monitor)
    assert clone(model)._skl_callbacks == [monitor]
    copy = pickle.loads(pickle.dumps(model.fit(X, Y)))
    copy.fit(X, Y)
    assert len(copy._skl_callbacks[0].get_logs().data) == 3


def test_verbose_still_prints_with_callbacks(capsys):
    MLPClassifier(**SMALL, max_iter=2, verbose=True).set_callbacks(Recorder()).fit(X, Y)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["Iteration 1", "Iteration 2"]


def test_inside_a_pipeline_without_callbacks_of_its_own_the_fit_joins_the_task_tree():
    # Recorder is not auto-propagated: the MLP gets the pipeline's context but no callbacks,
    # so it reports no epochs, and trains as it does alone.
    recorder = Recorder()
    model = make_pipeline(StandardScaler(), MLPClassifier(**SMALL, max_iter=3))
    model.set_callbacks(recorder).fit(X, Y)
    assert not [e for e in recorder.events if e[1] == "epoch"]
    alone = MLPClassifier(**SMALL, max_iter=3).fit(StandardScaler().fit_transform(X), Y)
    for a, b in zip(model[-1].coefs_, alone.coefs_):
        np.testing.assert_array_equal(a, b)
