# The x86-64-v4 (AVX-512) build of the kernels: the same body, _kernels.pyx, other compiler
# flags (setup.py). nnfast._kernels imports it when the CPU supports it.
include "_kernels.pyx"
