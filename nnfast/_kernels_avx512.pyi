# Type stub of nnfast._kernels_avx512: the x86-64-v4 build of nnfast/_kernels.pyx, so the same
# interface as nnfast/_kernels.pyi.
from nnfast._kernels import *
from nnfast._kernels import DEBUG_BUILD as DEBUG_BUILD, ISA as ISA, OPENMP as OPENMP
