"""The compiled kernels, and the choice of which build of them to use on this CPU.

The body, ``_kernels.pyx``, is compiled as ``baseline`` for the baseline instruction set of
the platform; on x86-64 two more builds of the same source target x86-64-v3 (``avx2``: AVX2
+ FMA, where the sigmoid and the small products run about twice as fast) and x86-64-v4
(``avx512``). ``kernels`` is the one this process uses: the best one the CPU runs.
``NNFAST_KERNEL=baseline``, ``=avx2`` or ``=avx512`` forces
one (``auto`` is the default). ``codes``, compiled once, exports the general path's integer
codes, which every build cimports from their one definition, ``codes.pxd``.
"""

import importlib
import os

from . import baseline as _baseline
from . import blas_kernels as _blas_kernels

# Best first: (NNFAST_KERNEL name, module, x86-64 level the CPU must run).
_VARIANTS = (("avx512", "avx512", 4), ("avx2", "avx2", 3))
_CHOICES = ("auto", "baseline") + tuple(name for name, _, _ in _VARIANTS)


def _load(module_name, level):
    """The variant module, or None if it was not built or this CPU cannot run it."""
    if not _baseline.cpu_runs(level):
        return None
    try:
        return importlib.import_module(f"{__package__}.{module_name}")
    except ImportError:
        return None


def _select():
    choice = os.environ.get("NNFAST_KERNEL", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ImportError(f"NNFAST_KERNEL={choice!r} is not one of {_CHOICES}")
    if choice == "baseline":
        return _baseline
    for name, module_name, level in _VARIANTS:
        if choice in ("auto", name):
            module = _load(module_name, level)
            if module is not None:
                return module
            if choice == name:
                raise ImportError(f"NNFAST_KERNEL={name}: that build is missing or this CPU "
                                  "cannot run it")
    return _baseline


def available():
    """Every kernel build importable and runnable here, baseline first."""
    modules = [_baseline]
    for _, module_name, level in reversed(_VARIANTS):
        module = _load(module_name, level)
        if module is not None:
            modules.append(module)
    return modules


kernels = _select()
_blas_kernels.configure(kernels)
