# Type stub of the compiled kernels (the body nnfast/_kernels/_kernels.pyx, built as
# nnfast._kernels.baseline, .avx2 and .avx512). Each argument's Cython type is in the comment
# beside it; every array argument is float32 or float64, one dtype per call ("floating"), C-contiguous.

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

_Float = np.float32 | np.float64
_Array = npt.NDArray[_Float]

OPENMP: bool  # compiled with OpenMP
DEBUG_BUILD: bool  # compiled with NNFAST_DEBUG=1 (bounds checks, -O0)
ISA: str  # "baseline", "x86-64-v3" or "x86-64-v4"

def team_threads() -> int: ...
def set_team_threads(n: int) -> None: ...  # int
def team_worker_ids(n: int) -> list[int]: ...  # int
def get_blas_min_flops() -> int: ...
def set_blas_min_flops(value: int) -> None: ...  # Py_ssize_t
def get_skinny_dim() -> int: ...
def set_skinny_dim(value: int) -> None: ...  # Py_ssize_t
def get_loop_units() -> int: ...
def set_loop_units(value: int) -> None: ...  # Py_ssize_t
def runs_as_loops(n_in: int, n_out: int) -> bool: ...  # Py_ssize_t
def cpu_runs(level: int) -> bool: ...  # int
def sigmoid_inplace(values: _Array) -> None: ...  # floating[::1] INOUT
def tanh_inplace(values: _Array) -> None: ...  # floating[::1] INOUT
def activate(values: _Array, activation: int, slopes: _Array) -> None: ...  # INOUT, OUT
def sigmoid_derivative(
    activations: _Array,  # const floating[::1]
    out: _Array,  # floating[::1] OUT
) -> None: ...
def forward_layer(
    inputs: _Array,  # const floating[:, ::1] (m, n_in)
    weights: _Array,  # const floating[:, ::1] (n_in, n_out)
    bias: _Array,  # const floating[::1] (n_out,) or (0,)
    outputs: _Array,  # floating[:, ::1] OUT (m, n_out)
    n_threads: int = 1,  # int
) -> None: ...
def output_delta(
    targets: _Array,  # const floating[:, ::1] (m, n_out)
    outputs: _Array,  # const floating[:, ::1] (m, n_out)
    delta: _Array,  # floating[:, ::1] OUT (m, n_out)
) -> float: ...
def hidden_delta(
    delta_next: _Array,  # const floating[:, ::1] (m, n_out)
    weights: _Array,  # const floating[:, ::1] (n_in, n_out)
    activations: _Array,  # const floating[:, ::1] (m, n_in)
    delta: _Array,  # floating[:, ::1] OUT (m, n_in)
    n_threads: int = 1,  # int
) -> None: ...
def apply_gradient(
    weights: _Array,  # floating[:, ::1] INOUT (n_in, n_out)
    bias: _Array,  # floating[::1] INOUT (n_out,) or (0,)
    inputs: _Array,  # const floating[:, ::1] (m, n_in)
    delta: _Array,  # const floating[:, ::1] (m, n_out)
    learning_rate: float,  # floating
    grad: _Array,  # floating[::1] scratch, >= n_out
    n_threads: int = 1,  # int
) -> None: ...
def original_gradient(
    params: _Array,  # const floating[::1]
    sizes: npt.NDArray[np.intp],  # const Py_ssize_t[::1]
    has_bias: bool,  # bint
    x: _Array,  # const floating[:, ::1] (m, s0)
    y: _Array,  # const floating[:, ::1] (m, sL)
    activations: _Array,  # floating[::1] scratch
    deltas: _Array,  # floating[::1] scratch
    grad: _Array,  # floating[::1] scratch
    gradient_out: _Array,  # floating[::1] OUT, like params
    n_threads: int = 1,  # int
) -> float: ...
def original_fit(
    params: _Array,  # floating[::1] INOUT
    sizes: npt.NDArray[np.intp],  # const Py_ssize_t[::1]
    has_bias: bool,  # bint
    x: _Array,  # const floating[:, ::1] (n_rows, s0)
    y: _Array,  # const floating[:, ::1] (n_rows, sL)
    order: npt.NDArray[np.intp],  # const Py_ssize_t[:, ::1] (n_epochs, n_rows) or (0, 0)
    batch_size: int,  # Py_ssize_t
    n_epochs: int,  # Py_ssize_t
    learning_rate: float,  # floating
    activations: _Array,  # floating[::1] scratch
    deltas: _Array,  # floating[::1] scratch
    grad: _Array,  # floating[::1] scratch
    batch_x: _Array,  # floating[::1] scratch
    batch_y: _Array,  # floating[::1] scratch
    check_every: int,  # Py_ssize_t
    n_threads: int = 1,  # int
) -> tuple[int, float, bool]: ...

# The general path (nnfast._kernels.runner drives it; its integer codes are the enums of
# nnfast._kernels.codes, defined once in codes.pxd).

class TrainConfig:
    # Keyword-only; each becomes a field of a cdef struct (_Config) the kernel reads.
    def __init__(
        self,
        *,
        sizes: Sequence[int],  # Py_ssize_t each, >= 1, at least two
        bias: bool,  # bint
        activations: Sequence[int],  # Py_ssize_t codes, one per hidden layer
        output: int,  # int code
        reduction: int,  # int code
        alpha: float,  # double
        optimizer: int,  # int code
        schedule: int,  # int code
        learning_rate_init: float,  # double
        momentum: float,  # double
        nesterov: bool,  # bint
        power_t: float,  # double
        beta_1: float,  # double
        beta_2: float,  # double
        epsilon: float,  # double
        batch_size: int,  # Py_ssize_t >= 1
        check_every: int,  # Py_ssize_t >= 0
        n_threads: int,  # int >= 1
        loss: int = ...,  # int code (0: the output's own loss)
        loss_parameter: float = ...,  # double: Huber's delta or the quantile
        max_grad_norm: float = ...,  # double >= 0 (0: no clipping)
        schedule_epochs: int = ...,  # Py_ssize_t: the cosine schedule's length
        warmup_epochs: int = ...,  # Py_ssize_t: its warm-up
    ) -> None: ...
    @property
    def sizes(self) -> tuple[int, ...]: ...
    @property
    def n_params(self) -> int: ...
    @property
    def state_size(self) -> int: ...

class _OptimizerState(Protocol):
    # nnfast._training.plan.OptimizerState: fit reads and writes these in place.
    values: _Array  # floating[::1] INOUT (config.state_size)
    step: int  # int64_t
    samples_seen: int  # int64_t
    learning_rate: float  # double

def fit(
    config: TrainConfig,
    params: _Array,  # floating[::1] INOUT
    state: _OptimizerState,  # INOUT: values and counters
    x: _Array,  # const floating[:, ::1] (n_rows, s0)
    y: _Array,  # const floating[:, ::1] (n_rows, sL)
    sample_weight: _Array,  # const floating[::1] (n_rows,) or (0,)
    order: npt.NDArray[np.intp],  # const Py_ssize_t[:, ::1] (>= n_epochs, n_rows) or (0, 0)
    workspace: dict[str, _Array],  # dict of floating[::1] scratch (nnfast._training.layout)
    epoch_losses: npt.NDArray[np.float64],  # double[::1] OUT (n_epochs,)
) -> tuple[int, bool]: ...
def loss_gradient(
    config: TrainConfig,
    params: _Array,  # const floating[::1]
    x: _Array,  # const floating[:, ::1] (n_rows, s0)
    y: _Array,  # const floating[:, ::1] (n_rows, sL)
    sample_weight: _Array,  # const floating[::1] (n_rows,) or (0,)
    workspace: dict[str, _Array],  # dict of floating[::1] scratch for n_rows rows
    grad_out: _Array,  # floating[::1] OUT, like params
) -> float: ...
def fit_sparse(
    config: TrainConfig,
    params: _Array,  # floating[::1] INOUT
    state: _OptimizerState,  # INOUT: values and counters
    data: _Array,  # const floating[::1] x's non-zero values (canonical CSR)
    indptr: npt.NDArray[np.int32] | npt.NDArray[np.int64],  # (n_rows + 1,), as indices
    indices: npt.NDArray[np.int32] | npt.NDArray[np.int64],  # column indices < s0
    y: _Array,  # const floating[:, ::1] (n_rows, sL)
    sample_weight: _Array,  # const floating[::1] (n_rows,) or (0,)
    order: npt.NDArray[np.intp],  # const Py_ssize_t[:, ::1] (>= n_epochs, n_rows) or (0, 0)
    workspace: dict[str, _Array],  # nnfast._training.layout.allocate_general_workspace(sparse=True)
    epoch_losses: npt.NDArray[np.float64],  # double[::1] OUT (n_epochs,)
) -> tuple[int, bool]: ...
def loss_gradient_sparse(
    config: TrainConfig,
    params: _Array,  # const floating[::1]
    data: _Array,  # const floating[::1] x's non-zero values (canonical CSR)
    indptr: npt.NDArray[np.int32] | npt.NDArray[np.int64],  # (n_rows + 1,), as indices
    indices: npt.NDArray[np.int32] | npt.NDArray[np.int64],  # column indices < s0
    y: _Array,  # const floating[:, ::1] (n_rows, sL)
    sample_weight: _Array,  # const floating[::1] (n_rows,) or (0,)
    workspace: dict[str, _Array],  # allocate_general_workspace(training=False, sparse=True)
    grad_out: _Array,  # floating[::1] OUT, like params
) -> float: ...
