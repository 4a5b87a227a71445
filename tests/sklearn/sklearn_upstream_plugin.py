"""A pytest plugin for the child pytest of test_sklearn_upstream.py, which runs the installed
scikit-learn's own tests with nnfast's MLP estimators patched in (``-p sklearn_upstream_plugin``).

It patches at import, which ``-p`` does before pytest loads scikit-learn's conftest or
collects (imports) a test module, so the test modules' ``from sklearn.neural_network import
MLPClassifier`` and scikit-learn's estimator registry (``all_estimators``, the instance
generator's per-class parameters) see nnfast's classes.

The tests it leaves out come in the JSON file named by the environment variable
``NNFAST_UPSTREAM_LISTS``: ``{"deselect": {test id: reason}}``, test ids relative to
scikit-learn's package directory (``neural_network/tests/test_mlp.py::test_gradient``; a
parametrized test's bare name covers all its parameters). An entry that matches no collected
test is an error, so the list cannot go stale silently.
"""

import json
import os

import pytest

from nnfast.sklearn import MLPClassifier, MLPRegressor, patch_sklearn

patch_sklearn()

import sklearn.neural_network  # noqa: E402  (after patching, by design)

# Refuse to run unpatched: every upstream test would pass vacuously.
assert sklearn.neural_network.MLPClassifier is MLPClassifier
assert sklearn.neural_network.MLPRegressor is MLPRegressor

_LISTS = json.loads(open(os.environ["NNFAST_UPSTREAM_LISTS"]).read())
_SKLEARN_DIR = os.path.dirname(sklearn.__file__)


def _relative_id(item):
    path, _, rest = item.nodeid.partition("::")
    path = os.path.relpath(os.path.join(str(item.config.rootpath), path), _SKLEARN_DIR)
    return f"{path.replace(os.sep, '/')}::{rest}"


def _match(item_id, entries):
    """The list entry naming this test: its exact id, or its id without parameters."""
    if item_id in entries:
        return item_id
    bare = item_id.split("[", 1)[0]
    return bare if bare in entries else None


def pytest_collection_modifyitems(config, items):
    used = set()
    kept, deselected = [], []
    for item in items:
        item_id = _relative_id(item)
        entry = _match(item_id, _LISTS["deselect"])
        if entry is not None:
            used.add(entry)
            deselected.append(item)
            continue
        kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
    stale = set(_LISTS["deselect"]) - used
    if stale:
        raise pytest.UsageError(
            "entries of test_sklearn_upstream.py's DESELECTED that match no collected test "
            f"(renamed or removed upstream?): {sorted(stale)}")
