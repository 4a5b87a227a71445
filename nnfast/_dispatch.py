"""Chooses which build of the compiled kernels to use on this CPU.

``_kernels`` is compiled for the baseline instruction set of the platform; on x86-64 a second
build of the same source, ``_kernels_avx2``, targets x86-64-v3 (AVX2 + FMA), where the
sigmoid and the small matrix products run about twice as fast. ``NNFAST_KERNEL=baseline`` or
``=avx2`` overrides the choice (``auto`` is the default).
"""

import os

from . import _kernels as _baseline

_CHOICES = ("auto", "baseline", "avx2")


def _select():
    choice = os.environ.get("NNFAST_KERNEL", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ImportError(f"NNFAST_KERNEL={choice!r} is not one of {_CHOICES}")
    if choice == "baseline":
        return _baseline
    try:
        from . import _kernels_avx2
    except ImportError:
        if choice == "avx2":
            raise
        return _baseline
    if not _baseline.cpu_has_avx2_fma():
        if choice == "avx2":
            raise ImportError("NNFAST_KERNEL=avx2 but this CPU lacks AVX2 or FMA")
        return _baseline
    return _kernels_avx2


def available():
    """Every kernel build importable and runnable here, baseline first."""
    modules = [_baseline]
    if _baseline.cpu_has_avx2_fma():
        try:
            from . import _kernels_avx2
        except ImportError:
            pass
        else:
            modules.append(_kernels_avx2)
    return modules


kernels = _select()
