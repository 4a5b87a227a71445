"""``nnfast.sklearn.patch_sklearn()`` / ``unpatch_sklearn()`` / ``is_patched()`` and
``python -m nnfast.sklearn script.py`` (``nnfast/sklearn/_patch.py``, ``__main__.py``).

The in-process tests always unpatch (the ``unpatched`` fixture), so no other test module sees
scikit-learn patched; what must start from a fresh interpreter runs in a child Python.
"""

import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import sklearn.neural_network
import sklearn.neural_network._multilayer_perceptron as sklearn_mlp_module
from sklearn.base import clone

from conftest import child_env
import nnfast.sklearn
from nnfast.sklearn import (MLPClassifier, MLPRegressor, is_patched, patch_sklearn,
                            unpatch_sklearn)

# scikit-learn's own classes, as imported before any patching.
SKLEARN_CLASSES = {"MLPClassifier": sklearn.neural_network.MLPClassifier,
                   "MLPRegressor": sklearn.neural_network.MLPRegressor}
MODULES = [sklearn.neural_network, sklearn_mlp_module]


@pytest.fixture
def unpatched():
    assert not is_patched()
    try:
        yield
    finally:
        unpatch_sklearn()
        assert not is_patched()
        for module in MODULES:
            for name, original in SKLEARN_CLASSES.items():
                assert getattr(module, name) is original


def test_sklearn_classes_are_scikit_learns_before_patching():
    assert SKLEARN_CLASSES["MLPClassifier"] is not MLPClassifier
    assert SKLEARN_CLASSES["MLPClassifier"].__module__.startswith("sklearn.")


def test_patch_rebinds_both_import_paths_and_unpatch_restores_the_same_objects(unpatched):
    patch_sklearn()
    assert is_patched()
    from sklearn.neural_network import MLPClassifier as public_c, MLPRegressor as public_r
    from sklearn.neural_network._multilayer_perceptron import (MLPClassifier as private_c,
                                                               MLPRegressor as private_r)
    assert public_c is private_c is MLPClassifier
    assert public_r is private_r is MLPRegressor
    unpatch_sklearn()
    assert not is_patched()
    from sklearn.neural_network import MLPClassifier as again
    assert again is SKLEARN_CLASSES["MLPClassifier"]
    assert sklearn_mlp_module.MLPRegressor is SKLEARN_CLASSES["MLPRegressor"]


def test_patch_and_unpatch_are_idempotent(unpatched):
    unpatch_sklearn()  # not patched: nothing to do
    assert sklearn.neural_network.MLPClassifier is SKLEARN_CLASSES["MLPClassifier"]
    patch_sklearn()
    patch_sklearn()  # must not record nnfast's classes as the originals
    assert sklearn.neural_network.MLPClassifier is MLPClassifier
    unpatch_sklearn()
    unpatch_sklearn()
    assert sklearn.neural_network.MLPClassifier is SKLEARN_CLASSES["MLPClassifier"]


def test_concurrent_patch_and_unpatch_keep_the_originals(unpatched):
    barrier = threading.Barrier(8)

    def churn(k):
        barrier.wait()
        for _ in range(200):
            (patch_sklearn if k % 2 else unpatch_sklearn)()
            patch_sklearn()
            unpatch_sklearn()

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    patch_sklearn()
    assert sklearn_mlp_module.MLPClassifier is MLPClassifier
    # The fixture checks that unpatching now restores scikit-learn's very classes.


def test_patched_estimators_repr_clone_and_pickle_as_nnfasts(unpatched):
    patch_sklearn()
    from sklearn.neural_network import MLPClassifier as Patched
    X = np.random.RandomState(0).normal(size=(20, 3))
    y = (X[:, 0] > 0).astype(int)
    model = Patched(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    assert repr(model) == "MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0)"
    assert type(clone(model)) is MLPClassifier
    with pytest.warns(Warning):  # ConvergenceWarning after 5 epochs
        model.fit(X, y)
    blob = pickle.dumps(model)
    assert b"nnfast.sklearn._mlp" in blob and b"sklearn.neural_network" not in blob
    unpatch_sklearn()
    # The pickle names nnfast's class, so it loads (as nnfast's) without patching.
    loaded = pickle.loads(blob)
    assert type(loaded) is MLPClassifier
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_patch_api_is_exported():
    assert {"patch_sklearn", "unpatch_sklearn", "is_patched"} <= set(nnfast.sklearn.__all__)
    from nnfast.sklearn import NetworkClassifier, NetworkRegressor  # noqa: F401


def _run(args, cwd, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_a_module_imported_before_patching_keeps_scikit_learns_class(tmp_path):
    # The documented limit: a name bound before patch_sklearn() is not rebound.
    (tmp_path / "early.py").write_text("from sklearn.neural_network import MLPClassifier\n")
    script = textwrap.dedent("""
        import early
        from nnfast.sklearn import patch_sklearn, MLPClassifier
        patch_sklearn()
        import late
        assert early.MLPClassifier is not MLPClassifier
        assert late.MLPClassifier is MLPClassifier
        print("ok")
    """)
    (tmp_path / "late.py").write_text("from sklearn.neural_network import MLPClassifier\n")
    result = _run(["-c", script], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


SCRIPT = textwrap.dedent("""
    import sys
    from sklearn.neural_network import MLPClassifier
    from sklearn.neural_network._multilayer_perceptron import MLPRegressor
    import helper  # from the script's own directory, as python script.py finds it

    class Local:  # pickled by reference to __main__, so __main__ must be this module
        pass

    if __name__ == "__main__":
        import pickle
        assert pickle.loads(pickle.dumps(Local())).__class__ is Local
        print(MLPClassifier.__module__, MLPRegressor.__module__, sys.argv, helper.VALUE)
        sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
""")


@pytest.fixture
def script_dir(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "script.py").write_text(SCRIPT)
    (tmp_path / "scripts" / "helper.py").write_text("VALUE = 42\n")
    (tmp_path / "scripts" / "failing.py").write_text("def f():\n    raise KeyError('boom')\nf()\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "tool.py").write_text(
        "import sys\nfrom sklearn.neural_network import MLPClassifier\n"
        "if __name__ == '__main__':\n"
        "    print(MLPClassifier.__module__, sys.argv[1:])\n    sys.exit(3)\n")
    return tmp_path


def test_cli_runs_a_script_patched_as_python_would(script_dir):
    result = _run(["-m", "nnfast.sklearn", "scripts/script.py", "7", "--flag"], script_dir)
    assert result.returncode == 7, result.stderr
    assert result.stdout.split(" ", 2)[:2] == ["nnfast.sklearn._mlp", "nnfast.sklearn._mlp"]
    assert "['scripts/script.py', '7', '--flag'] 42" in result.stdout
    # The same script unpatched, for comparison: only the classes differ.
    plain = _run(["scripts/script.py", "7", "--flag"], script_dir)
    assert plain.returncode == 7, plain.stderr
    assert plain.stdout.split(" ", 2)[2] == result.stdout.split(" ", 2)[2]


def test_cli_reports_an_uncaught_exception_from_the_script_with_status_1(script_dir):
    result = _run(["-m", "nnfast.sklearn", "scripts/failing.py"], script_dir)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n  File ")
    assert "failing.py" in result.stderr.splitlines()[1]
    assert result.stderr.rstrip().endswith("KeyError: 'boom'")
    assert "runpy" not in result.stderr and "nnfast" not in result.stderr


def test_cli_runs_a_module_with_dash_m(script_dir):
    result = _run(["-m", "nnfast.sklearn", "-m", "pkg.tool", "a", "b"], script_dir)
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "nnfast.sklearn._mlp ['a', 'b']"


def test_cli_usage_errors(script_dir):
    result = _run(["-m", "nnfast.sklearn"], script_dir)
    assert result.returncode == 2 and "usage:" in result.stderr
    result = _run(["-m", "nnfast.sklearn", "missing.py"], script_dir)
    assert result.returncode == 2 and "missing.py" in result.stderr
    result = _run(["-m", "nnfast.sklearn", "--help"], script_dir)
    assert result.returncode == 0 and "usage:" in result.stdout
