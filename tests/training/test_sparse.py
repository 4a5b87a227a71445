"""Sparse X (scipy CSR / CSC, matrices and arrays) through the kernel, Network and the MLP
estimators, against independent references: scikit-learn's MLP fitted on the same sparse
matrix, nnfast's own dense fit of the same data (the dense kernel path, tested elsewhere
against nnfast.reference and scikit-learn), and nnfast.reference on the sparse matrix (scipy's
products). Then bad sparse input, the caller's matrix left alone, a failed fit leaving the
model as it was, and the memory of a fit on a 100,000 x 200,000 matrix.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import neural_network

from conftest import (DTYPES, GENERAL_ATOL, GENERAL_RTOL, MLP_RTOL, assert_same_mlp,
                      kernel_build)
from nnfast import Network
from nnfast.optimizers import SGD, Adam
from nnfast.sklearn import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# The containers scipy offers for the two formats scikit-learn's MLP takes.
FORMATS = {
    "csr_matrix": sp.csr_matrix, "csc_matrix": sp.csc_matrix,
    "csr_array": sp.csr_array, "csc_array": sp.csc_array,
}
SOLVERS = ["adam", "sgd", "lbfgs"]
BASE = dict(hidden_layer_sizes=(7,), max_iter=10, random_state=0, batch_size=16,
            learning_rate_init=0.01, alpha=1e-3)


def sparse_data(task="multiclass", n_rows=60, n_features=40, per_row=4, dtype=np.float64,
                seed=0):
    """(CSR X, y): per_row non-zeros per row at random columns (TF-IDF-like positive values),
    targets that depend on them."""
    rng = np.random.RandomState(seed)
    columns = np.concatenate([rng.choice(n_features, per_row, replace=False)
                              for _ in range(n_rows)])
    indptr = np.arange(0, n_rows * per_row + 1, per_row)
    values = rng.uniform(0.1, 1.0, size=n_rows * per_row)
    X = sp.csr_matrix((values, columns, indptr), shape=(n_rows, n_features))
    X.sort_indices()
    score = X @ rng.normal(size=(n_features, 3))
    y = {
        "binary": np.where(score[:, 0] > np.median(score[:, 0]), "a", "b"),
        "multiclass": score.argmax(axis=1),
        "multilabel": (score > np.median(score, axis=0)).astype(int),
        "regression": 2 * score[:, 0] + 1,
        "multioutput": score[:, :2],
    }[task]
    return X.astype(dtype), y


def _estimators(task):
    return ((MLPRegressor, neural_network.MLPRegressor)
            if task in ("regression", "multioutput")
            else (MLPClassifier, neural_network.MLPClassifier))


# ------------------------------------------------------------------- the MLP estimators

@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel", "regression",
                                  "multioutput"])
def test_estimators_equal_sklearn_sparse_fit(mlp_backend, solver, task):
    """float64, 10 epochs (iterations): scikit-learn's weights and records on the same CSR."""
    X, y = sparse_data(task)
    ours_class, theirs_class = _estimators(task)
    params = dict(BASE, solver=solver, activation="tanh" if task == "binary" else "relu")
    ours = ours_class(**params).fit(X, y)
    theirs = theirs_class(**params).fit(X, y)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("solver", SOLVERS)
def test_every_format_and_dtype_equals_sklearn_and_dense(fmt, solver, dtype):
    """CSR / CSC, matrix / array, float32 / float64: scikit-learn's sparse fit, and nnfast's
    dense fit of the same data (the same arithmetic: the same weights to rounding)."""
    X, y = sparse_data("multiclass", dtype=dtype)
    X = FORMATS[fmt](X)
    params = dict(BASE, solver=solver)
    ours = MLPClassifier(**params).fit(X, y)
    theirs = neural_network.MLPClassifier(**params).fit(X, y)
    dense = MLPClassifier(**params).fit(X.toarray(), y)
    assert ours.coefs_[0].dtype == dtype
    assert_same_mlp(ours, theirs, MLP_RTOL[dtype])
    assert_same_mlp(ours, dense, MLP_RTOL[dtype])


@pytest.mark.parametrize("solver", SOLVERS)
def test_shuffled_weighted_early_stopping_equal_sklearn(mlp_backend, solver):
    """Shuffled epochs, sample weights and (stochastic solvers) early stopping."""
    X, y = sparse_data("multiclass", n_rows=80)
    weights = np.random.RandomState(1).uniform(0.2, 2.0, size=X.shape[0])
    params = dict(BASE, solver=solver, shuffle=True)
    if solver != "lbfgs":
        params.update(early_stopping=True, validation_fraction=0.25, n_iter_no_change=3)
    ours = MLPClassifier(**params).fit(X, y, sample_weight=weights)
    theirs = neural_network.MLPClassifier(**params).fit(X, y, sample_weight=weights)
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_partial_fit_equals_sklearn(mlp_backend, solver):
    X, y = sparse_data("multiclass")
    params = dict(BASE, solver=solver, shuffle=True)
    ours, theirs = MLPClassifier(**params), neural_network.MLPClassifier(**params)
    for start in (0, 20, 40, 0):
        batch = slice(start, start + 20)
        ours.partial_fit(X[batch], y[batch], classes=np.unique(y))
        theirs.partial_fit(X[batch], y[batch], classes=np.unique(y))
    assert_same_mlp(ours, theirs, MLP_RTOL[np.float64])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_predictions_equal_dense_and_sklearn(fmt):
    """predict, predict_proba, predict_log_proba and score on sparse X: nnfast's on the same
    data dense, and scikit-learn's (fitted alike) on the sparse."""
    X, y = sparse_data("multiclass")
    ours = MLPClassifier(**BASE).fit(X, y)
    theirs = neural_network.MLPClassifier(**BASE).fit(X, y)
    Xs = FORMATS[fmt](X)
    dense = Xs.toarray()
    assert_array_equal(ours.predict(Xs), ours.predict(dense))
    assert_allclose(ours.predict_proba(Xs), ours.predict_proba(dense), rtol=1e-12)
    assert_allclose(ours.predict_log_proba(Xs), ours.predict_log_proba(dense), rtol=1e-12)
    assert ours.score(Xs, y) == ours.score(dense, y)
    assert_array_equal(ours.predict(Xs), theirs.predict(Xs))
    assert_allclose(ours.predict_proba(Xs), theirs.predict_proba(Xs), rtol=1e-9)
    assert ours.score(Xs, y) == theirs.score(Xs, y)
    Xr, yr = sparse_data("regression")
    regressor = MLPRegressor(**BASE).fit(FORMATS[fmt](Xr), yr)
    assert_allclose(regressor.predict(FORMATS[fmt](Xr)), regressor.predict(Xr.toarray()),
                    rtol=1e-12)
    assert_allclose(regressor.score(FORMATS[fmt](Xr), yr), regressor.score(Xr.toarray(), yr),
                    rtol=1e-12)


def test_sparse_then_dense_warm_start_and_dtype_of_later_fits():
    """A model first fitted on float32 sparse data keeps float32 when later given float64
    sparse data (as a dense model does), and warm starts on sparse data as on dense."""
    X, y = sparse_data("multiclass", dtype=np.float32)
    params = dict(BASE, warm_start=True)
    ours = MLPClassifier(**params).fit(X, y)
    ours.fit(X.astype(np.float64), y)
    dense = MLPClassifier(**params).fit(X.toarray(), y)
    dense.fit(X.toarray().astype(np.float64), y)
    assert ours.coefs_[0].dtype == np.float32
    assert_same_mlp(ours, dense, MLP_RTOL[np.float32])


# ---------------------------------------------------------------------------- Network

def _network(backend, output="softmax", optimizer=None, **options):
    return Network([40, 6, 3], seed=3, backend=backend, bias=True, activation="tanh",
                   output=output, optimizer=optimizer or Adam(learning_rate=0.01), **options)


def _one_hot(y, n):
    return np.eye(n)[y]


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "plain"])
def test_network_fit_equals_dense_fit(backend, dtype, optimizer):
    """Network.fit on sparse X: the weights of the dense fit of the same data, shuffled
    mini-batches and sample weights included."""
    X, labels = sparse_data("multiclass", dtype=dtype)
    y = _one_hot(labels, 3)
    weights = np.random.RandomState(2).uniform(0.5, 1.5, size=X.shape[0])
    make = {"adam": lambda: Adam(learning_rate=0.01),
            "sgd": lambda: SGD(learning_rate=0.05, momentum=0.9),
            "plain": lambda: None}[optimizer]
    fits = []
    for data in (X, X.toarray()):
        net = _network(backend, optimizer=make(), dtype=dtype, alpha=1e-3)
        net.fit(data, y, 10, batch_size=16, sample_weight=weights)
        fits.append(net)
    for a, b in zip(fits[0].weights + fits[0].biases, fits[1].weights + fits[1].biases):
        assert_allclose(a, b, rtol=GENERAL_RTOL[dtype], atol=GENERAL_ATOL[dtype])
    assert fits[0].optimizer_state == fits[1].optimizer_state or optimizer == "plain" or \
        np.allclose(fits[0].optimizer_state.values, fits[1].optimizer_state.values,
                    rtol=GENERAL_RTOL[dtype], atol=GENERAL_ATOL[dtype])


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_original_network_on_sparse_equals_dense(backend):
    """The original model (sigmoid layers, its output, summed plain steps): sparse X takes
    the general kernel, which gives the fused kernel's weights on the same data dense."""
    X, labels = sparse_data("multilabel", n_features=40)
    y = labels[:, :1]
    nets = [Network([40, 5, 1], seed=1, backend=backend) for _ in range(2)]
    nets[0].fit(X, y, 20, learning_rate=0.1)
    nets[1].fit(X.toarray(), y, 20, learning_rate=0.1)
    for a, b in zip(nets[0].weights, nets[1].weights):
        assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert_allclose(nets[0].predict(X), nets[1].predict(X.toarray()), rtol=1e-12)
    for a, b in zip(nets[0].gradient(X, y)[0], nets[1].gradient(X.toarray(), y)[0]):
        assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "gelu", "softplus"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("output", ["identity", "logistic", "softmax", "exp", "original"])
def test_loss_gradient_and_predict_equal_reference(kernels, dtype, output, activation):
    """Each kernel build's sparse loss and gradient against nnfast.reference's on the
    same sparse matrix (scipy's products), and against the dense kernel."""
    X, labels = sparse_data("multilabel", dtype=dtype)
    y = labels.astype(dtype) * (0.8 if output == "exp" else 1.0)
    if output == "softmax":
        y = np.eye(3, dtype=dtype)[labels.argmax(axis=1)]
    results = []
    with kernel_build(kernels):
        for backend, data in (("cython", X), ("numpy", X), ("cython", X.toarray())):
            net = Network([40, 6, 3], seed=3, backend=backend, bias=True,
                          activation=activation, output=output, alpha=0.01, dtype=dtype)
            loss, weight_grads, bias_grads = net.loss_gradient(X if data is X else data, y)
            results.append((loss, weight_grads + bias_grads, net.predict(data)))
    for loss, grads, outputs in results[1:]:
        assert_allclose(results[0][0], loss, rtol=GENERAL_RTOL[dtype])
        for a, b in zip(results[0][1], grads):
            assert_allclose(a, b, rtol=GENERAL_RTOL[dtype], atol=GENERAL_ATOL[dtype])
        assert_allclose(results[0][2], outputs, rtol=GENERAL_RTOL[dtype],
                        atol=GENERAL_ATOL[dtype])


def test_threads_give_the_same_fit(kernels, monkeypatch):
    """The kernel's threads (row blocks forward, column blocks for the gradient): the weights
    of the serial fit."""
    X, labels = sparse_data("multiclass", n_rows=100)
    y = _one_hot(labels, 3)
    fits = []
    with kernel_build(kernels):
        for threads in (1, 2):
            net = _network("cython", n_threads=threads)
            # Force the threaded kernel.
            monkeypatch.setattr("nnfast._training.threads.kernel_blocks",
                                lambda *args, t=threads, **kwargs: t)
            fits.append(net.fit(X, y, 5, batch_size=32).weights)
    for a, b in zip(*fits):
        assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def _kernel_call(kernels, X, y, net, sparse=True):
    """(config, workspace, grad) for one full-batch loss_gradient[_sparse] call of net on X."""
    from nnfast._kernels import runner as _compiled
    from nnfast._training import plan as _plan
    from nnfast._training.layout import allocate_general_workspace

    plan = _plan.FitPlan(sizes=net.sizes, bias=True, dtype=np.dtype(np.float64),
                         activations=net.activations, output="softmax", reduction="mean",
                         alpha=0.0, optimizer=net.optimizer, learning_rate=0.01,
                         batch_size=X.shape[0], shuffled=False, weighted=False)
    with kernel_build(kernels):
        config = _compiled._config(plan, X.shape[0], 1, 0)
    workspace = allocate_general_workspace(net.sizes, True, X.shape[0], np.float64,
                                           training=False, sparse=sparse)
    return config, workspace, np.empty_like(net.params)


def test_int64_indices_give_the_same_gradient(kernels):
    """scipy's int64 indices (matrices beyond 2**31 non-zeros; scipy's constructors narrow
    smaller ones, so the kernel is called directly): the int32 call's loss and gradient,
    and the dense kernel's."""
    X, labels = sparse_data("multiclass", n_rows=100)
    y = np.ascontiguousarray(_one_hot(labels, 3))
    net = _network("cython")
    none = np.empty(0)
    results = []
    for index_dtype in (np.int32, np.int64):
        config, workspace, grad = _kernel_call(kernels, X, y, net)
        loss = kernels.loss_gradient_sparse(config, net.params, X.data,
                                            X.indptr.astype(index_dtype),
                                            X.indices.astype(index_dtype), y, none,
                                            workspace, grad)
        results.append((loss, grad))
    config, workspace, grad = _kernel_call(kernels, X, y, net, sparse=False)
    results.append((kernels.loss_gradient(config, net.params, X.toarray(), y, none,
                                          workspace, grad), grad))
    assert results[0][0] == results[1][0]
    assert_array_equal(results[0][1], results[1][1])
    assert_allclose(results[0][0], results[2][0], rtol=1e-12)
    assert_allclose(results[0][1], results[2][1], rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------ bad input

def test_unsorted_and_duplicate_indices_are_canonicalised_on_a_copy():
    """Duplicates sum and order does not matter, as in scipy's product; the caller's matrix
    stays as it was."""
    X, labels = sparse_data("multiclass")
    y = _one_hot(labels, 3)
    # Each row's entries reversed, the first split into two duplicates.
    data, indices, indptr = [], [], [0]
    for r in range(X.shape[0]):
        row = X.getrow(r)
        vals, cols = row.data[::-1].copy(), row.indices[::-1].copy()
        data += [vals[0] / 2, vals[0] / 2, *vals[1:]]
        indices += [cols[0], cols[0], *cols[1:]]
        indptr.append(len(data))
    messy = sp.csr_matrix((np.array(data), np.array(indices), np.array(indptr)),
                          shape=X.shape)
    assert not messy.has_canonical_format
    before = (messy.data.copy(), messy.indices.copy(), messy.indptr.copy())
    nets = [_network("cython").fit(data, y, 3, batch_size=16) for data in (messy, X)]
    for a, b in zip(nets[0].weights, nets[1].weights):
        assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(before, (messy.data, messy.indices, messy.indptr)):
        assert_array_equal(a, b)
    estimator = MLPClassifier(**BASE).fit(messy, labels)
    assert_same_mlp(estimator, MLPClassifier(**BASE).fit(X, labels), 1e-12)


def test_bad_sparse_input_is_refused_and_changes_nothing():
    X, labels = sparse_data("multiclass")
    y = _one_hot(labels, 3)
    net = _network("cython")
    before = [w.copy() for w in net.weights]
    with pytest.raises(ValueError, match="columns"):
        net.fit(sp.csr_matrix(np.ones((5, 39))), y[:5], 1)
    with pytest.raises(TypeError, match="integers or floats"):
        net.fit(X.astype(bool), y, 1)
    with pytest.raises(TypeError, match="integers or floats"):
        net.predict(X.astype(np.complex128))
    bad = X.copy()
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        net.fit(bad, y, 1)
    broken = sp.csr_matrix((X.data, X.indices.copy(), X.indptr), shape=X.shape)
    broken.indices[5] = 40  # outside the 40 columns
    with pytest.raises(ValueError, match="not a valid CSR"):
        net.fit(broken, y, 1)
    with pytest.raises(ValueError, match="2-D"):
        net.fit(sp.coo_array(np.ones(40)), y[:1], 1)
    for a, b in zip(before, net.weights):
        assert_array_equal(a, b)
    # The estimators: scikit-learn's validation (non-finite values), then nothing changed.
    estimator = MLPClassifier(**BASE).fit(X, labels)
    state = {k: v for k, v in estimator.__dict__.items()}
    with pytest.raises(ValueError):
        estimator.fit(bad, labels)
    with pytest.raises(ValueError):
        estimator.predict(sp.csr_matrix(np.ones((2, 39))))
    assert estimator.__dict__.keys() == state.keys()
    for k, v in state.items():
        assert estimator.__dict__[k] is v, k


def test_kernel_refuses_a_broken_structure(kernels):
    """The kernel's own check (the estimators' internal path trusts its caller): an index
    outside the input layer, row starts past the data, mixed index dtypes."""
    X, labels = sparse_data("multiclass")
    y = _one_hot(labels, 3)
    net = _network("cython")
    config, workspace, grad = _kernel_call(kernels, X, y, net)
    y = np.ascontiguousarray(y)
    none = np.empty(0)
    indices = X.indices.copy()
    indices[7] = 40
    with pytest.raises(ValueError, match="column index"):
        kernels.loss_gradient_sparse(config, net.params, X.data, X.indptr, indices, y, none,
                                     workspace, grad)
    indptr = X.indptr.copy()
    indptr[-1] += 1
    with pytest.raises(ValueError, match="row starts"):
        kernels.loss_gradient_sparse(config, net.params, X.data, indptr, X.indices, y, none,
                                     workspace, grad)
    with pytest.raises(TypeError, match="int32 or"):
        kernels.loss_gradient_sparse(config, net.params, X.data, X.indptr,
                                     X.indices.astype(np.int64), y, none, workspace, grad)
    loss = kernels.loss_gradient_sparse(config, net.params, X.data, X.indptr, X.indices, y,
                                        none, workspace, grad)
    assert np.isfinite(loss)


# --------------------------------------------------------------------------------- memory

def test_large_sparse_fit_stays_small():
    """A 100,000 x 200,000 CSR with 4 non-zeros per row (160 GB dense in float64) trains and
    predicts in a few hundred MiB: never densified, batches in O(batch x hidden) scratch.
    Peak of NumPy's allocations (tracemalloc) beyond the matrix itself."""
    n_rows, n_features, per_row = 100_000, 200_000, 4
    rng = np.random.RandomState(0)
    X = sp.csr_matrix((rng.uniform(0.1, 1, n_rows * per_row).astype(np.float32),
                       rng.randint(0, n_features, n_rows * per_row).astype(np.int32),
                       np.arange(0, n_rows * per_row + 1, per_row, dtype=np.int32)),
                      shape=(n_rows, n_features))
    X.sum_duplicates()
    y = rng.randint(0, 4, n_rows)
    model = MLPClassifier(hidden_layer_sizes=(16,), max_iter=1, batch_size=1000,
                          random_state=0)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
            model.predict(X[:1000])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert model.coefs_[0].shape == (n_features, 16)
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_sparse_fit_memory_does_not_grow_with_epochs():
    """The sparse path's buffers (the batch's transposed rows included) are allocated once
    per fit: a fit ten times longer peaks no higher (stored order: the row orders of
    shuffled epochs have their own buffer, which grows up to its bound, test_memory.py)."""
    X, labels = sparse_data("multiclass", n_rows=200, n_features=300, per_row=6)
    y = _one_hot(labels, 3)

    def peak(epochs):
        tracemalloc.start()
        try:
            Network([300, 6, 3], seed=3, bias=True, activation="tanh", output="softmax",
                    optimizer=Adam(learning_rate=0.01)).fit(X, y, epochs, batch_size=16,
                                                             shuffle=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(1)  # imports and caches outside the comparison
    short, long = peak(2), peak(20)
    assert long <= short + 4096, (short, long)
