"""Which of a layer's products the kernels leave to BLAS, from what BLAS runs on this CPU.

The kernels call SciPy's BLAS for their wider products and run narrow ones (a short side) as
their own loops (``_skinny.h``). OpenBLAS picks its kernels once, as it loads, from the
CPU's family and model, and runs a model it does not know on the kernels of an older one:
on the AMD EPYC (family 26, Zen 5) VMs nnfast is measured on, NumPy's and SciPy's OpenBLAS
ran their Haswell (AVX2) kernels on a CPU with AVX-512. There the AVX-512 build's loops
outran that BLAS on whole layers of up to ``LOOP_UNITS`` units a side (measured, one
thread: digits' 64 -> 100 -> 10 fits 1.4-1.5x faster, 20000x40's 40 -> 100 -> 4 1.4-1.5x;
against OpenBLAS's own AVX-512 kernels, in separate runs, from 15% faster to 20% slower),
so the kernels take such layers themselves (``set_loop_units``). Decided once, at import,
before any kernel call, so that every fit in the process has the same arithmetic.
"""

import ctypes

# OpenBLAS's core types (its corename, threadpoolctl's "architecture") whose kernels use
# AVX-512.
AVX512_BLAS_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
# Both sides of a layer at most this many units: the loops keep a block of B's rows in the
# L1 cache (128 x 64 float32 values: 32 KB).
LOOP_UNITS = 128


def blas_core_name(library_path):
    """OpenBLAS's name for the kernels it runs (e.g. "Haswell", "SkylakeX"), asked of the
    library at library_path or the ones it links (SciPy's cython_blas links its OpenBLAS);
    None when there is no OpenBLAS there or it cannot be asked."""
    try:
        library = ctypes.CDLL(library_path)
    except OSError:
        return None
    for symbol in ("scipy_openblas_get_corename", "openblas_get_corename"):
        function = getattr(library, symbol, None)
        if function is not None:
            function.restype = ctypes.c_char_p
            name = function()
            return name.decode(errors="replace").strip() if name else None
    return None


def runs_avx512(core_name):
    """Whether OpenBLAS's kernels of this core name use AVX-512."""
    return core_name.lower() in AVX512_BLAS_CORES


def loop_units(isa, core_name):
    """The layer size up to which the kernels of this build (its ISA) run whole layers as
    their own loops beside a BLAS on core_name's kernels: LOOP_UNITS for the AVX-512 build
    beside kernels without AVX-512, else 0 (BLAS as before; an unknown BLAS included)."""
    if isa != "x86-64-v4" or core_name is None:
        return 0
    return 0 if runs_avx512(core_name) else LOOP_UNITS


def kernels_blas_path():
    """The file of the module whose dgemm and sgemm the kernels call (they cimport them from
    scipy.linalg.cython_blas, which links SciPy's BLAS)."""
    from scipy.linalg import cython_blas

    return cython_blas.__file__


def configure(kernels):
    """Applies loop_units to a kernel build, for the BLAS its products call."""
    kernels.set_loop_units(loop_units(kernels.ISA, blas_core_name(kernels_blas_path())))
