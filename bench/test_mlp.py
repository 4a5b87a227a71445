"""scikit-learn's MLPClassifier against nnfast's compiled general path (issue 9's speed rows).

The same model and optimizer on both sides: one hidden layer of 100 ReLU units, softmax
output, L2 alpha 1e-4, batch size "auto" (min(200, n_rows)), shuffled, 50 epochs with no
early stop (tol=0, n_iter_no_change above max_iter). nnfast runs as ``Network`` (the kernel
alone) and, when ``nnfast.sklearn`` provides it, as its ``MLPClassifier`` (what a user of the
estimator gets). Grouped by row and dtype
(``python -m pytest bench/test_mlp.py --benchmark-group-by=param:row,param:dtype``) the
implementations sit side by side; divide a median by 50 for the time per epoch.
"""

import warnings

import numpy as np
import pytest

EPOCHS = 50


def _data(row):
    from sklearn.datasets import load_digits, load_iris, make_classification
    from sklearn.preprocessing import StandardScaler

    if row == "iris":
        X, y = load_iris(return_X_y=True)
    elif row == "digits":
        X, y = load_digits(return_X_y=True)
    else:
        X, y = make_classification(n_samples=20_000, n_features=40, n_informative=20,
                                   n_classes=4, random_state=0)
    return StandardScaler().fit_transform(X), y


# (row, solver)
ROWS = [("iris", "adam"), ("digits", "adam"), ("digits", "sgd"), ("20000x40", "adam")]


def _sklearn_kwargs(solver):
    return dict(hidden_layer_sizes=(100,), activation="relu", solver=solver, alpha=1e-4,
                batch_size="auto", max_iter=EPOCHS, tol=0.0, n_iter_no_change=EPOCHS + 1,
                random_state=0)


def _fit_sklearn(X, y, solver):
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached, as asked
        MLPClassifier(**_sklearn_kwargs(solver)).fit(X, y)


def _fit_nnfast_sklearn(X, y, solver):
    from nnfast.sklearn import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MLPClassifier(**_sklearn_kwargs(solver)).fit(X, y)


def _fit_network(X, y, solver):
    import nnfast
    from nnfast.optimizers import SGD, Adam

    classes = np.unique(y)
    Y = (y[:, None] == classes[None, :]).astype(X.dtype)
    optimizer = Adam(learning_rate=1e-3) if solver == "adam" else SGD(learning_rate=1e-3)
    net = nnfast.Network([X.shape[1], 100, len(classes)], dtype=X.dtype, bias=True,
                         activation="relu", output="softmax", optimizer=optimizer, alpha=1e-4)
    net.fit(X, Y, iterations=EPOCHS, batch_size=min(200, X.shape[0]), shuffle=True)


def _implementations():
    implementations = {"sklearn": _fit_sklearn, "nnfast-network": _fit_network}
    try:
        from nnfast.sklearn import MLPClassifier  # noqa: F401
    except ImportError:
        pass
    else:
        implementations["nnfast-sklearn"] = _fit_nnfast_sklearn
    return implementations


IMPLEMENTATIONS = _implementations()


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("row, solver", ROWS, ids=[f"{r}-{s}" for r, s in ROWS])
def test_mlp_fit(benchmark, row, solver, dtype, implementation):
    X, y = _data(row)
    X = np.ascontiguousarray(X, dtype=dtype)
    benchmark.extra_info["epochs"] = EPOCHS
    benchmark.pedantic(IMPLEMENTATIONS[implementation], args=(X, y, solver), rounds=3,
                       iterations=1, warmup_rounds=1)
