"""The integer codes of the general path, as Python IntEnum classes.

Defined once, in ``codes.pxd`` beside this file: Cython exports that file's ``cpdef enum``
declarations from this module (``Activation``, ``Output``, ``Optimizer``, ``Schedule``,
``Reduction``, ``Loss``), and every kernel build cimports the same declarations, so the numbers the
kernel switches on and the numbers Python passes it cannot differ.
``nnfast._training.plan`` names the codes from these enums.
"""

__all__ = ["Activation", "Output", "Optimizer", "Schedule", "Reduction", "Loss", "names"]


def names(codes):
    """The option names of an enum's codes, in code order: the member's name without the
    enum's prefix, in lower case. ``names(Output)[code]`` is the output a code stands for
    (``names(Output)[Output.OUTPUT_SOFTMAX] == "softmax"``).

    Parameters
    ----------
    codes : one of this module's enums.

    Returns
    -------
    tuple of str
    """
    members = sorted(codes)
    if [int(member) for member in members] != list(range(len(members))):
        raise ValueError(f"{codes.__name__} is not numbered 0, 1, ... without gaps")
    prefix = codes.__name__.upper() + "_"
    return tuple(member.name[len(prefix):].lower() for member in members)
