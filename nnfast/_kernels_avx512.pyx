# The x86-64-v4 (AVX-512) build of the kernels: the same source, other compiler flags
# (setup.py). nnfast._dispatch imports it when the CPU supports it.
include "_kernels.pyx"
