# The x86-64-v3 (AVX2 + FMA) build of the kernels: the same source, other compiler flags
# (setup.py). nnfast._dispatch imports it when the CPU supports it.
include "_kernels.pyx"
