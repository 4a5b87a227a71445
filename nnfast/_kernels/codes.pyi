# Type stub of nnfast._kernels.codes: the general path's integer codes (codes.pxd, their one
# definition), exported by Cython as IntEnum classes.
import enum

__all__ = ["Activation", "Output", "Optimizer", "Schedule", "Reduction", "Loss", "names"]

class Activation(enum.IntEnum):
    ACTIVATION_IDENTITY = 0
    ACTIVATION_LOGISTIC = 1
    ACTIVATION_TANH = 2
    ACTIVATION_RELU = 3

class Output(enum.IntEnum):
    OUTPUT_ORIGINAL = 0
    OUTPUT_IDENTITY = 1
    OUTPUT_LOGISTIC = 2
    OUTPUT_SOFTMAX = 3
    OUTPUT_EXP = 4

class Optimizer(enum.IntEnum):
    OPTIMIZER_PLAIN = 0
    OPTIMIZER_SGD = 1
    OPTIMIZER_ADAM = 2

class Schedule(enum.IntEnum):
    SCHEDULE_CONSTANT = 0
    SCHEDULE_INVSCALING = 1
    SCHEDULE_ADAPTIVE = 2
    SCHEDULE_COSINE = 3

class Reduction(enum.IntEnum):
    REDUCTION_SUM = 0
    REDUCTION_MEAN = 1

class Loss(enum.IntEnum):
    LOSS_OUTPUT = 0
    LOSS_ABSOLUTE_ERROR = 1
    LOSS_HUBER = 2
    LOSS_QUANTILE = 3

def names(codes: type[enum.IntEnum]) -> tuple[str, ...]: ...
