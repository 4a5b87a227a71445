# Type stub for the compiled kernels (nnfast/_kernels.pyx; nnfast/_kernels_avx2 is the same
# source built for x86-64-v3). Each argument's Cython type is in the comment beside it; every
# array argument is float32 or float64, one dtype per call ("floating"), C-contiguous.

import numpy as np
import numpy.typing as npt

_Float = np.float32 | np.float64
_Array = npt.NDArray[_Float]

OPENMP: bool  # compiled with OpenMP
DEBUG_BUILD: bool  # compiled with NNFAST_DEBUG=1 (bounds checks, -O0)
ISA: str  # "baseline", "x86-64-v3" or "x86-64-v4"

def get_blas_min_flops() -> int: ...
def set_blas_min_flops(value: int) -> None: ...  # Py_ssize_t
def cpu_runs(level: int) -> bool: ...  # int
def sigmoid_inplace(values: _Array) -> None: ...  # floating[::1] INOUT
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
def gradient(
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
def fit(
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
