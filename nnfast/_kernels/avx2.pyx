# The x86-64-v3 (AVX2 + FMA) build of the kernels: the same body, _kernels.pyx, other
# compiler flags (setup.py). nnfast._kernels imports it when the CPU supports it.
include "_kernels.pyx"
