"""ONNX export of ``MLPClassifier`` / ``MLPRegressor`` (``nnfast.sklearn._onnx``), run by
onnxruntime against the estimators' ``predict_proba`` / ``predict``.

Every hidden activation the estimators accept (``_params.ACTIVATIONS``), both dtypes, each
task; the node table also for the activations the estimators do not accept yet, on a
hand-made model whose activation is set after fitting, against NumPy formulas written here.
Then when registration happens: ``import nnfast.sklearn`` imports no skl2onnx, works
without it, and ``skl2onnx.to_onnx`` converts after imports in either order (subprocesses,
so that the modules are fresh).

skl2onnx, onnx and onnxruntime are in the ``test`` extra: missing, this module fails to
import (an error, not a skip).
"""

import subprocess
import sys
import textwrap

import numpy as np
import onnxruntime
import pytest
import skl2onnx
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import erf, expit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nnfast.sklearn import MLPClassifier, MLPRegressor
from nnfast.sklearn._onnx import ACTIVATION_NODES
from nnfast.sklearn._params import ACTIVATIONS

DTYPES = [np.float32, np.float64]
# onnxruntime against predict / predict_proba, relative to the outputs' scale (at least 1):
# float32's kernels (MLAS: polynomial exp, tanh, erf) differ from NumPy's by a few ulp per
# operation, which the layers' sums and an exp output carry to a few ulp of the largest
# output; float64 differs by summation order only.
ATOL = {np.float32: 1e-6, np.float64: 1e-12}
RTOL = {np.float32: 1e-6, np.float64: 1e-12}

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(dtype, n_rows=60, n_features=4):
    X = np.random.RandomState(0).randn(n_rows, n_features).astype(dtype)
    return X


def _targets(task, X):
    above = X[:, :3] > 0
    if task == "binary":
        return above[:, 0].astype(int)
    if task == "multiclass":
        return np.array(["low", "mid", "high"])[above[:, 0].astype(int) + above[:, 1]]
    if task == "multilabel":
        return above.astype(int)
    if task == "single":
        return 2 * X[:, 0] + X[:, 1] ** 2
    if task == "multi":
        return np.column_stack([2 * X[:, 0] + X[:, 1] ** 2, np.abs(X[:, 2])])
    raise ValueError(task)


def _run(model, X, **options):
    """The model's ONNX graph (from skl2onnx.to_onnx, as a user calls it) run on X."""
    onx = skl2onnx.to_onnx(model, X[:1], options=options or None)
    session = onnxruntime.InferenceSession(onx.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def _assert_close(actual, expected, dtype):
    assert actual.dtype == np.dtype(dtype)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert_allclose(actual, expected, rtol=RTOL[dtype], atol=ATOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_classifier_matches_predict_proba(dtype, activation, task):
    X = _data(dtype)
    model = MLPClassifier((5, 4), activation=activation, max_iter=40, learning_rate_init=0.05,
                          random_state=0).fit(X, _targets(task, X))
    label, proba = _run(model, X, zipmap=False)
    _assert_close(proba, model.predict_proba(X), dtype)
    assert_array_equal(label, model.predict(X))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("task", ["single", "multi"])
@pytest.mark.parametrize("loss", ["squared_error", "poisson", "huber"])
def test_regressor_matches_predict(dtype, activation, task, loss):
    X = _data(dtype)
    y = _targets(task, X)
    model = MLPRegressor(loss=loss, hidden_layer_sizes=(5, 4), activation=activation,
                         max_iter=40, learning_rate_init=0.05, random_state=0).fit(X, y)
    (prediction,) = _run(model, X)
    # skl2onnx's regressor shape: (n, outputs), one output too.
    _assert_close(prediction, model.predict(X).reshape(len(X), -1), dtype)
    assert prediction.shape == (len(X), y.reshape(len(X), -1).shape[1])


def test_binary_threshold_and_integer_labels():
    """A probability of exactly 0.5 is the first class (predict's p > 0.5), and integer
    classes come out as int64 labels."""
    X = _data(np.float64)
    model = MLPClassifier((3,), max_iter=5, random_state=0).fit(X, np.where(X[:, 0] > 0, 7, 3))
    # Zero last-layer weights and bias: p = sigmoid(0) = 0.5 for every row.
    model.coefs_[-1][...] = 0
    model.intercepts_[-1][...] = 0
    label, proba = _run(model, X, zipmap=False)
    assert label.dtype == np.int64
    assert_array_equal(label, model.predict(X))
    assert_array_equal(label, 3)
    assert_allclose(proba, 0.5)


def test_single_class():
    """A classifier that saw one class predicts it (predict_proba's two columns, as
    scikit-learn's; ZipMap cannot key two columns by one class: zipmap=False)."""
    X = _data(np.float64)
    model = MLPClassifier((3,), max_iter=5, random_state=0).fit(X, np.full(len(X), "only"))
    label, proba = _run(model, X, zipmap=False)
    _assert_close(proba, model.predict_proba(X), np.float64)
    assert_array_equal(label, model.predict(X))


def test_zipmap_gives_scikit_learn_converter_outputs():
    """The default options (ZipMap: one {class: probability} per row) and zipmap="columns",
    as skl2onnx's converter of scikit-learn's MLP gives them (float32: onnxruntime's ZipMap
    takes float only, for scikit-learn's MLP too)."""
    X = _data(np.float32)
    model = MLPClassifier((5,), max_iter=30, random_state=0).fit(X, _targets("multiclass", X))
    label, maps = _run(model, X)
    expected = model.predict_proba(X)
    assert_array_equal(label, model.predict(X))
    assert [sorted(m) for m in maps] == [sorted(model.classes_)] * len(X)
    assert_allclose([[m[c] for c in model.classes_] for m in maps], expected,
                    rtol=RTOL[np.float32], atol=ATOL[np.float32])
    label, *columns = _run(model, X, zipmap="columns")
    assert_allclose(np.column_stack(columns), expected, rtol=RTOL[np.float32],
                    atol=ATOL[np.float32])


def test_output_class_labels_and_nocl_options():
    X = _data(np.float64)
    model = MLPClassifier((5,), max_iter=30, random_state=0).fit(X, _targets("multiclass", X))
    label, proba, class_labels = _run(model, X, zipmap=False, output_class_labels=True)
    assert_array_equal(class_labels, model.classes_)
    label, _ = _run(model, X, zipmap=False, nocl=True)
    assert_array_equal(model.classes_[label], model.predict(X))


def test_pipeline():
    X = 10 * _data(np.float64) + 3
    y = _targets("multiclass", X - 3)
    pipeline = make_pipeline(StandardScaler(), MLPClassifier((5,), max_iter=30,
                                                             random_state=0)).fit(X, y)
    label, proba = _run(pipeline, X, zipmap=False)
    _assert_close(proba, pipeline.predict_proba(X), np.float64)
    assert_array_equal(label, pipeline.predict(X))


# The node table against formulas written here, also for the activations the estimators do not
# accept yet: what each name computes (the estimators' definitions).
FORMULAS = {
    "identity": lambda z: z,
    "logistic": expit,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
    "gelu": lambda z: 0.5 * z * (1 + erf(z / np.sqrt(2))),
    "silu": lambda z: z * expit(z),
    "softplus": lambda z: np.logaddexp(0, z),
}
# float32: onnxruntime's Erf, Tanh and Sigmoid are polynomial approximations within a few ulp.
FORMULA_RTOL = {np.float32: 2e-6, np.float64: 1e-12}


def test_node_table_covers_every_activation():
    assert set(ACTIVATIONS) <= set(ACTIVATION_NODES)
    assert set(FORMULAS) <= set(ACTIVATION_NODES)
    assert set(ACTIVATION_NODES) - set(FORMULAS) == {"exp", "softmax"}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("activation", sorted(FORMULAS))
def test_node_table_against_numpy(dtype, activation):
    """A two-layer regressor whose hidden activation is set by hand after fitting (the
    converter reads ``activation``), with weights that put the hidden pre-activations on
    both sides of zero up to |z| ~ 60 (softplus and elu far into their tails)."""
    rng = np.random.RandomState(1)
    X = _data(dtype, n_rows=200, n_features=3)
    model = MLPRegressor(hidden_layer_sizes=(8,), activation="identity", max_iter=2,
                         random_state=0).fit(X, _targets("multi", X))
    w0 = (rng.randn(3, 8) * 12).astype(dtype)
    b0 = rng.randn(8).astype(dtype)
    model.coefs_[0], model.intercepts_[0] = w0, b0
    model.activation = activation
    (prediction,) = _run(model, X)
    z = X.astype(np.float64) @ w0 + b0
    expected = FORMULAS[activation](z) @ model.coefs_[1] + model.intercepts_[1]
    assert np.abs(z).max() > 40
    assert prediction.dtype == np.dtype(dtype)
    assert_allclose(prediction, expected, rtol=FORMULA_RTOL[dtype],
                    atol=FORMULA_RTOL[dtype] * np.abs(expected).max())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_gelu_over_a_dense_range(dtype):
    """GELU's erf, onnxruntime's Erf in float and nnfast's series and continued fraction in
    double (split at |x| / sqrt(2) = 2.5), at 4001 points of [-12, 12]: a one-unit network
    whose output is its hidden unit."""
    X = np.linspace(-12, 12, 4001).astype(dtype)[:, None]
    model = MLPRegressor(hidden_layer_sizes=(1,), activation="identity", max_iter=2,
                         random_state=0).fit(X, X[:, 0])
    model.coefs_ = [np.ones((1, 1), dtype), np.ones((1, 1), dtype)]
    model.intercepts_ = [np.zeros(1, dtype), np.zeros(1, dtype)]
    model.activation = "gelu"
    (prediction,) = _run(model, X)
    expected = FORMULAS["gelu"](X.astype(np.float64))
    assert_allclose(prediction, expected, rtol=FORMULA_RTOL[dtype],
                    atol={np.float32: 1e-6, np.float64: 1e-14}[dtype])


def test_unknown_activation_is_a_clear_error():
    X = _data(np.float64)
    model = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(
        X, X[:, 0])
    model.activation = "swish2"
    with pytest.raises(ValueError, match="no ONNX form for the activation 'swish2'"):
        skl2onnx.to_onnx(model, X[:1])


# ------------------------------------------------------------------------- registration


def _python(*snippets, block_skl2onnx=False):
    """Runs the snippets of code, one after the other, in a fresh interpreter; returns its
    stdout (fails on a non-zero exit)."""
    prelude = ""
    if block_skl2onnx:
        # As if skl2onnx were not installed: its import fails.
        prelude = textwrap.dedent("""
            import sys
            class _Block:
                def find_spec(self, name, path=None, target=None):
                    if name == "skl2onnx" or name.startswith("skl2onnx."):
                        raise ImportError(f"No module named {name!r}")
            sys.meta_path.insert(0, _Block())
        """)
    result = subprocess.run([sys.executable, "-c", "\n".join(
        textwrap.dedent(code) for code in (prelude, *snippets))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


_FIT = """
import warnings
warnings.simplefilter("ignore")
import numpy as np
X = np.random.RandomState(0).randn(30, 3)
model = MLPRegressor(hidden_layer_sizes=(3,), max_iter=3).fit(X, X[:, 0])
"""


def test_import_does_not_import_skl2onnx():
    out = _python("""
        import sys
        import nnfast.sklearn
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("skl2onnx", "onnx",
                                                                   "onnxruntime")))
    """)
    assert out.strip() == "[]"


def test_works_without_skl2onnx():
    out = _python("""
        from nnfast.sklearn import MLPRegressor
    """, _FIT, """
        print(model.predict(X[:2]).shape)
        try:
            import skl2onnx
        except ImportError:
            print("blocked")
    """, block_skl2onnx=True)
    assert out.split() == ["(2,)", "blocked"]


@pytest.mark.parametrize("first", ["nnfast", "skl2onnx"])
def test_to_onnx_after_imports_in_either_order(first):
    imports = ["from nnfast.sklearn import MLPRegressor", "import skl2onnx"]
    if first == "skl2onnx":
        imports.reverse()
    out = _python("\n".join(imports), _FIT, """
        import sys
        from nnfast.sklearn._onnx_hook import _RegisteringLoader
        print(type(skl2onnx.to_onnx(model, X[:1])).__name__)
        # The hook is gone once used: no finder left, skl2onnx's own loader.
        print([type(f).__name__ for f in sys.meta_path if "Skl2onnx" in type(f).__name__],
              isinstance(skl2onnx.__loader__, _RegisteringLoader))
    """)
    assert out.split("\n")[:2] == ["ModelProto", "[] False"]


def test_register_onnx_is_explicit_too():
    """register_onnx() registers (again) on demand."""
    out = _python("""
        import skl2onnx
        from skl2onnx._supported_operators import sklearn_operator_name_map
        from nnfast.sklearn import MLPClassifier, MLPRegressor, register_onnx
        register_onnx()
        print(sklearn_operator_name_map[MLPClassifier], sklearn_operator_name_map[MLPRegressor])
    """)
    assert out.split() == ["NnfastMLPClassifier", "NnfastMLPRegressor"]


def test_registration_does_not_warn():
    """The hook's registration succeeds (a failure warns, here an error that fails the
    import)."""
    out = _python("""
        import warnings
        warnings.simplefilter("error")
        import nnfast.sklearn
        import skl2onnx
        print("ok")
    """)
    assert out.strip() == "ok"


@pytest.mark.parametrize("loss", ["absolute_error", "quantile"])
def test_training_only_options_export_the_same_model(loss):
    """Options that change training only (robust losses, dropout, the cosine schedule,
    clipping) export the plain forward pass: predictions equal predict's."""
    X = _data(np.float64)
    y = _targets("multi", X)
    model = MLPRegressor(loss=loss, hidden_layer_sizes=(6, 5), activation="gelu", dropout=0.2,
                         learning_rate="cosine", max_grad_norm=1.0, max_iter=20,
                         random_state=0).fit(X, y)
    (prediction,) = _run(model, X)
    _assert_close(prediction, model.predict(X), np.float64)
