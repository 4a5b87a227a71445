"""Files written by nnfast 0.1.0 (tests/data/release_0_1_0, made by its make_fixtures.py):
networks saved with ``Network.save``, and pickles of networks and of all four estimators.

Each must load with today's nnfast, predict what it predicted when it was written, and train
on from where it stood as it did then: its optimizer state, random state, history and fitted
attributes survived. The expected values were computed by 0.1.0 on the machine that wrote the
files; another machine's kernel build (AVX2 or AVX-512) may round differently, hence the
tolerances, a few hundred ulps after a few epochs of training.
"""

import pathlib
import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import nnfast

RELEASE = pathlib.Path(__file__).parent / "data" / "release_0_1_0"
EXPECTED = dict(np.load(RELEASE / "expected.npz"))
RTOL = {np.float32: 1e-4, np.float64: 1e-10}
NETWORKS = ["original", "general", "float32"]
ESTIMATORS = ["mlp_classifier_adam", "mlp_classifier_sgd_early_stopping",
              "mlp_classifier_partial_fit", "mlp_regressor_lbfgs", "mlp_regressor_adam_float32",
              "network_classifier", "network_regressor"]


def _make_fixtures():
    """make_fixtures.py, imported: its data() and continuation rules are what the files
    were checked against when written."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", RELEASE / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _make_fixtures()


def _load_pickle(name):
    with open(RELEASE / f"{name}.pkl", "rb") as file:
        return pickle.load(file)


def _network_inputs(name, network):
    X, _, targets = MAKE.data()
    if name == "original":
        return MAKE.TUTORIAL_X, MAKE.TUTORIAL_Y
    return X.astype(network.dtype), targets.astype(network.dtype)


@pytest.mark.parametrize("how", ["load", "pickle"])
@pytest.mark.parametrize("name", NETWORKS)
def test_network_of_release_0_1_0_predicts_and_trains_on_as_it_did(name, how):
    network = (nnfast.Network.load(RELEASE / f"network_{name}.npz") if how == "load"
               else _load_pickle(f"network_{name}"))
    assert isinstance(network, nnfast.Network)
    X, y = _network_inputs(name, network)
    rtol = RTOL[network.dtype.type]
    assert_allclose(network.predict(X), EXPECTED[f"network_{name}/predict"], rtol=rtol)
    history = np.array(network.history, dtype=float).reshape(-1, 2)
    assert_allclose(history, EXPECTED[f"network_{name}/history"].reshape(-1, 2), rtol=rtol)
    assert_allclose(MAKE.continued_network(network, X, y),
                    EXPECTED[f"network_{name}/continued_weights"], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimator_pickled_by_release_0_1_0_predicts_and_trains_on_as_it_did(name):
    # scikit-learn warns when the pickle's scikit-learn version differs from this one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = _load_pickle(name)
    assert type(estimator).__module__.startswith("nnfast")
    X, labels, targets = MAKE.data()
    dtype = np.float32 if "float32" in name else np.float64
    X = X.astype(dtype)
    rtol = RTOL[dtype]
    predictions = estimator.predict(X)
    expected = EXPECTED[f"{name}/predict"]
    if expected.dtype.kind in "US":
        assert_array_equal(predictions, expected)
        assert_allclose(estimator.predict_proba(X), EXPECTED[f"{name}/predict_proba"],
                        rtol=rtol, atol=1e-12)
    else:
        assert_allclose(predictions, expected, rtol=rtol, atol=1e-12)
    y = targets[:, 0].astype(dtype) if "float32" in name else (
        targets if "regressor" in name else labels)
    assert_allclose(MAKE.continued(estimator, X, y), EXPECTED[f"{name}/continued_coefs"],
                    rtol=rtol, atol=rtol)
