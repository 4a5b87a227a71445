"""Which products the kernels leave to BLAS, from the kernels the BLAS runs on this CPU
(nnfast._kernels.blas_kernels); the loops' results are checked against the reference in
test_general_kernel.py (its "loops" route)."""

import ctypes.util
import os

import pytest

from nnfast._kernels import blas_kernels
from nnfast._kernels import kernels as chosen


@pytest.mark.parametrize("isa, core, units", [
    ("x86-64-v4", "Haswell", blas_kernels.LOOP_UNITS),   # Zen 5 taken for a Haswell
    ("x86-64-v4", "Zen", blas_kernels.LOOP_UNITS),
    ("x86-64-v4", "SkylakeX", 0),                        # BLAS has AVX-512 kernels
    ("x86-64-v4", "COOPERLAKE", 0),
    ("x86-64-v4", "SapphireRapids", 0),
    ("x86-64-v4", None, 0),                              # not an OpenBLAS: left as it was
    ("x86-64-v3", "Haswell", 0),                         # the loops without AVX-512
    ("baseline", "Prescott", 0),
])
def test_loops_take_whole_layers_only_in_the_avx512_build_beside_blas_without_it(isa, core,
                                                                                 units):
    assert blas_kernels.loop_units(isa, core) == units


def test_the_blas_core_is_what_threadpoolctl_reads_of_the_process_openblas():
    """The kernels' BLAS (found through their dgemm) names the same kernels that
    threadpoolctl reads of an OpenBLAS loaded in this process."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    path = blas_kernels.kernels_blas_path()
    assert os.path.exists(path)
    name = blas_kernels.blas_core_name(path)
    architectures = {info.get("architecture") for info in threadpoolctl.threadpool_info()
                     if info["internal_api"] == "openblas"}
    if name is None:
        assert not architectures  # SciPy on another BLAS (MKL, Accelerate): nothing to ask
    else:
        assert name in architectures, (name, architectures)


def test_a_library_that_is_no_openblas_has_no_blas_core():
    assert blas_kernels.blas_core_name("/no/such/library.so") is None
    libc = ctypes.util.find_library("c")
    if libc is not None:
        assert blas_kernels.blas_core_name(libc) is None


def test_the_chosen_build_runs_as_many_loops_as_its_blas_calls_for():
    assert chosen.get_loop_units() == blas_kernels.loop_units(
        chosen.ISA, blas_kernels.blas_core_name(blas_kernels.kernels_blas_path()))


def test_loop_units_refuse_a_negative_count(kernels):
    saved = kernels.get_loop_units()
    with pytest.raises(ValueError, match="at least 0"):
        kernels.set_loop_units(-1)
    assert kernels.get_loop_units() == saved
