# The integer codes of the general path: how hidden activations, outputs, optimizers,
# learning-rate schedules and gradient reductions are numbered. This file is their one
# definition. The kernel builds cimport them (compile-time constants: no import at run time);
# the module nnfast._kernels.codes, compiled from codes.pyx beside this file, exports the
# same enums to Python as IntEnum classes, from which nnfast._training.plan derives its names
# (``OUTPUT_SOFTMAX`` is the code of the output "softmax"). A new member is added here, with
# a NumPy counterpart in nnfast.reference and a case in the kernel; nothing else lists them.
#
# Each enum is numbered from 0 without gaps: the kernel checks a code c with
# 0 <= c < len(enum), and plan.py's name tuples are indexed by code.

cpdef enum Activation:
    ACTIVATION_IDENTITY = 0
    ACTIVATION_LOGISTIC = 1
    ACTIVATION_TANH = 2
    ACTIVATION_RELU = 3
    ACTIVATION_LEAKY_RELU = 4
    ACTIVATION_ELU = 5
    ACTIVATION_GELU = 6
    ACTIVATION_SILU = 7
    ACTIVATION_SOFTPLUS = 8

cpdef enum Output:
    OUTPUT_ORIGINAL = 0
    OUTPUT_IDENTITY = 1
    OUTPUT_LOGISTIC = 2
    OUTPUT_SOFTMAX = 3
    OUTPUT_EXP = 4

cpdef enum Optimizer:
    OPTIMIZER_PLAIN = 0
    OPTIMIZER_SGD = 1
    OPTIMIZER_ADAM = 2

cpdef enum Schedule:
    SCHEDULE_CONSTANT = 0
    SCHEDULE_INVSCALING = 1
    SCHEDULE_ADAPTIVE = 2
    SCHEDULE_COSINE = 3

cpdef enum Reduction:
    REDUCTION_SUM = 0
    REDUCTION_MEAN = 1

# The data loss of an identity output: LOSS_OUTPUT is the output's own loss (squared error
# for "identity", and the only choice for the other outputs); the others are the robust
# regression losses of nnfast.reference (absolute error, Huber, quantile / pinball).
cpdef enum Loss:
    LOSS_OUTPUT = 0
    LOSS_ABSOLUTE_ERROR = 1
    LOSS_HUBER = 2
    LOSS_QUANTILE = 3
