# Type stub of nnfast._kernels.avx2: the x86-64-v3 build of nnfast/_kernels/_kernels.pyx, so the
# same interface as the baseline build's (baseline.pyi).
from nnfast._kernels.baseline import *
from nnfast._kernels.baseline import DEBUG_BUILD as DEBUG_BUILD
from nnfast._kernels.baseline import ISA as ISA
from nnfast._kernels.baseline import OPENMP as OPENMP
