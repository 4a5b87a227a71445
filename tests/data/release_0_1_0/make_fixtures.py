"""Writes the files a user of nnfast 0.1.0 may hold, and what they must give when loaded.

Run once, with nnfast 0.1.0 (commit 7dc88d3) installed, from this folder:
``python make_fixtures.py``. The files it wrote are committed beside it and are never
rewritten: tests/test_release_files.py loads them with today's nnfast and checks that each
predicts as it did when it was written, and that training continues from it as it continued
then (optimizer state, random state and history survive). Rerunning this script with a later
nnfast would test nothing, so it refuses to.
"""

import pathlib
import pickle
import warnings

import numpy as np

import nnfast
from nnfast import optimizers
from nnfast.sklearn import MLPClassifier, MLPRegressor, NetworkClassifier, NetworkRegressor

HERE = pathlib.Path(__file__).parent
TUTORIAL_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=float)
TUTORIAL_Y = np.array([[0], [1], [1], [0]], dtype=float)


def data():
    """Inputs for fitting and predicting: 80 rows x 5 features, two target kinds."""
    rs = np.random.RandomState(7)
    X = rs.normal(size=(80, 5))
    labels = np.array(["cat", "dog", "eel"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    targets = np.column_stack([X[:, 0] - X[:, 2], X[:, 1] * X[:, 3]])
    return X, labels, targets


def networks(X, targets):
    """The original's network and a general one, each trained part of the way."""
    original = nnfast.Network([3, 4, 1], seed=1).fit(TUTORIAL_X, TUTORIAL_Y, 500,
                                                         report_every=100)
    general = nnfast.Network([5, 6, 4, 2], seed=3, bias=True, activation=("relu", "tanh"),
                             output="identity", optimizer=optimizers.Adam(), alpha=1e-3)
    general.fit(X, targets, 5, 0.01, batch_size=16, report_every=1)
    float32 = nnfast.Network([5, 3, 2], seed=4, dtype=np.float32, bias=True,
                             output="identity", optimizer=optimizers.SGD(momentum=0.9))
    float32.fit(X.astype(np.float32), targets.astype(np.float32), 4, 0.01, batch_size=20)
    return {"original": (original, TUTORIAL_X), "general": (general, X),
            "float32": (float32, X.astype(np.float32))}


def estimators(X, labels, targets):
    """One fitted instance of each estimator, over the solvers and options that keep state."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the fits are short on purpose
        return {
            "mlp_classifier_adam": MLPClassifier((7,), max_iter=15, random_state=0).fit(
                X, labels),
            "mlp_classifier_sgd_early_stopping": MLPClassifier(
                (6, 4), solver="sgd", activation="tanh", early_stopping=True, max_iter=12,
                random_state=1).fit(X, labels),
            "mlp_classifier_partial_fit": MLPClassifier(
                (5,), solver="sgd", learning_rate="adaptive", random_state=2).partial_fit(
                X, labels, classes=np.unique(labels)),
            "mlp_regressor_lbfgs": MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=30,
                                                random_state=3).fit(X, targets),
            "mlp_regressor_adam_float32": MLPRegressor(hidden_layer_sizes=(6,), max_iter=10, random_state=4).fit(
                X.astype(np.float32), targets[:, 0].astype(np.float32)),
            "network_classifier": NetworkClassifier((6,), max_iter=10, random_state=5).fit(
                X, labels),
            "network_regressor": NetworkRegressor((6,), max_iter=10, random_state=6).fit(
                X, targets),
        }


def outputs_of(estimator, X):
    """What a loaded estimator must reproduce: its predictions (and probabilities)."""
    result = {"predict": np.asarray(estimator.predict(X))}
    if hasattr(estimator, "predict_proba"):
        result["predict_proba"] = estimator.predict_proba(X)
    return result


def continued(estimator, X, y):
    """The estimator's weights after a little more training from where it stands:
    ``partial_fit`` where it has one (not L-BFGS nor early stopping), else a warm-started (MLP) or fresh
    (``Network*``) three-epoch fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        params = estimator.get_params()
        if (hasattr(estimator, "partial_fit") and params.get("solver") != "lbfgs"
                and not params["early_stopping"]):
            estimator.partial_fit(X, y)
        else:
            estimator.set_params(max_iter=3, **({"warm_start": True} if "warm_start" in params
                                                else {}))
            estimator.fit(X, y)
    return np.concatenate([c.ravel() for c in estimator.coefs_])


def continued_network(network, X, y):
    """The network's weights after three more epochs, resumed where it stopped."""
    general = network.output != "original"
    network.fit(X, y, 3, 0.01 if general else None, batch_size=16 if general else None,
                resume=general)
    return np.concatenate([w.ravel() for w in network.weights])


def main():
    if nnfast.__version__ != "0.1.0":
        raise SystemExit(f"these files are nnfast 0.1.0's; this is nnfast {nnfast.__version__}")
    X, labels, targets = data()
    expected = {}
    for name, (network, inputs) in networks(X, targets).items():
        network.save(HERE / f"network_{name}.npz")
        with open(HERE / f"network_{name}.pkl", "wb") as file:
            pickle.dump(network, file)
        expected[f"network_{name}/predict"] = network.predict(inputs)
        expected[f"network_{name}/history"] = np.array(network.history, dtype=float)
        y = TUTORIAL_Y if name == "original" else targets.astype(network.dtype)
        expected[f"network_{name}/continued_weights"] = continued_network(network, inputs, y)
    for name, estimator in estimators(X, labels, targets).items():
        with open(HERE / f"{name}.pkl", "wb") as file:
            pickle.dump(estimator, file)
        inputs = X.astype(np.float32) if "float32" in name else X
        for method, values in outputs_of(estimator, inputs).items():
            expected[f"{name}/{method}"] = values
        y = targets[:, 0].astype(np.float32) if "float32" in name else (
            targets if "regressor" in name else labels)
        expected[f"{name}/continued_coefs"] = continued(estimator, inputs, y)
    np.savez(HERE / "expected.npz", **expected)


if __name__ == "__main__":
    main()
