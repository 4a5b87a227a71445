# The baseline build of the kernels (the instruction set every CPU of the platform has):
# the body is _kernels.pyx, compiled three times on x86-64 with different flags (setup.py);
# nnfast._kernels imports the best build the CPU runs.
include "_kernels.pyx"
