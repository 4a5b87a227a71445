"""Declares the compiled kernel; everything else lives in pyproject.toml.

Environment switches (read at build time):

NNFAST_DEBUG=1      bounds checks, wraparound and initialisation checks back on, -O0 -g.
NNFAST_OPENMP=0|1   force OpenMP off or on; by default it is used when the compiler links it.
NNFAST_NATIVE=1     add -march=native to every variant (off by default: wheels must run on
                    any x86-64 machine).

On x86-64 the kernel body (``nnfast/_kernels/_kernels.pyx``) is compiled three times:
``nnfast._kernels.baseline`` for the baseline ISA every x86-64 CPU has (SSE2),
``nnfast._kernels.avx2`` for x86-64-v3 (AVX2 + FMA) and ``nnfast._kernels.avx512`` for
x86-64-v4 (AVX-512, 512-bit vectors); nnfast imports the best one the CPU runs
(``nnfast._kernels``). Elsewhere only the baseline module is built.
"""

import os
import sys
import sysconfig
import tempfile
import textwrap

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("NNFAST_DEBUG", "0") not in ("", "0")
NATIVE = os.environ.get("NNFAST_NATIVE", "0") not in ("", "0")
OPENMP_CHOICE = os.environ.get("NNFAST_OPENMP", "")

# The only place compiler directives are set.
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    # C division in both builds: the kernels rely on IEEE arithmetic (x / 0 is inf or nan:
    # a diverging fit, a batch whose sample weights sum to zero, which the estimators then
    # report as scikit-learn does). Cython's checked division would raise ZeroDivisionError
    # instead, which a noexcept nogil function can only print, leaving a result the
    # optimised build never computes; the debug build checks memory access, not arithmetic.
    "cdivision": True,
    "embedsignature": True,
}


def _openmp_flags(compiler):
    """OpenMP compile/link flags for this compiler, or None when it has no OpenMP."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    flags = ["-fopenmp"]
    source = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "check_openmp.c")
        with open(path, "w") as handle:
            handle.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, "check_openmp", output_dir=tmp, extra_postargs=flags)
        except Exception:
            return None
    return flags, flags


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1  # the two kernel variants compile side by side

    def build_extensions(self):
        compile_args, link_args = [], []
        if self.compiler.compiler_type == "msvc":
            compile_args.append("/O2")
        elif DEBUG:
            compile_args += ["-O0", "-g", "-UNDEBUG"]
        else:
            # -fno-trapping-math: nnfast never reads floating-point exception flags, and
            # without it GCC will not turn the branch-free selects of the kernel's exp into
            # vector blends, so no loop over a layer vectorises. Results are unchanged.
            # -fno-math-errno: nor does it read errno, and without it GCC keeps every sqrt
            # scalar (it must call libm to set errno for negative inputs), so Adam's update
            # over a layer does not vectorise. Results are unchanged.
            compile_args += ["-O3", "-fno-trapping-math", "-fno-math-errno"]
            if NATIVE:
                compile_args.append("-march=native")

        openmp = None
        if OPENMP_CHOICE != "0":
            openmp = _openmp_flags(self.compiler)
            if openmp is None and OPENMP_CHOICE == "1":
                sys.exit("NNFAST_OPENMP=1 but the compiler cannot build OpenMP code")
        if openmp is None:
            print("*** nnfast: building WITHOUT OpenMP: the elementwise kernels run serially ***",
                  file=sys.stderr)
        else:
            compile_args += openmp[0]
            link_args += openmp[1]

        macros = [("NNFAST_DEBUG_BUILD", "1" if DEBUG else "0")]
        for ext in self.extensions:
            ext.define_macros = macros + ext.define_macros
            if ext.name in ISA_FLAGS and not NATIVE:
                ext.extra_compile_args = ext.extra_compile_args + ISA_FLAGS[ext.name]
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()


# The x86-64 variants and their flags. Each variant's .pyx is one line that includes
# _kernels.pyx, so all of them share one source.
ISA_FLAGS = {
    "nnfast._kernels.avx2": ["-march=x86-64-v3"],
    # GCC keeps to 256-bit vectors for x86-64-v4 unless told; 512-bit ones measured ~15%
    # faster on the sigmoid-bound small workload (bench/).
    "nnfast._kernels.avx512": ["-march=x86-64-v4", "-mprefer-vector-width=512"],
}

# The platform the wheel is for, which is not the build machine's when cross-compiling
# (cibuildwheel sets _PYTHON_HOST_PLATFORM, e.g. macosx-11.0-x86_64 on an arm64 Mac; a
# universal2 target is not x86-64 only, so it gets the baseline). MSVC is left out: the CPU
# check that picks a variant (nnfast_cpu_runs in _kernels.pyx) is GCC/Clang-only, so on
# Windows a variant could never be chosen.
TARGET = sysconfig.get_platform()
X86_64 = TARGET.endswith("x86_64") and sys.platform != "win32"

# Every variant compiles _kernels.pyx and the C loops it includes: a change to either rebuilds.
DEPENDS = ["nnfast/_kernels/_kernels.pyx", "nnfast/_kernels/_skinny.h",
           "nnfast/_kernels/_clock.h", "nnfast/_kernels/codes.pxd"]
# nnfast._kernels.codes: the general path's integer codes (codes.pxd) as Python enums; the
# builds cimport the same file, so it is compiled once, for no particular instruction set.
extensions = [Extension("nnfast._kernels.codes", ["nnfast/_kernels/codes.pyx"],
                        depends=["nnfast/_kernels/codes.pxd"]),
              Extension("nnfast._kernels.baseline", ["nnfast/_kernels/baseline.pyx"],
                        depends=DEPENDS)]
if X86_64:
    extensions += [Extension(name, [name.replace(".", "/") + ".pyx"], depends=DEPENDS)
                   for name in ISA_FLAGS]

setup(
    ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES),
    cmdclass={"build_ext": BuildExt},
)
