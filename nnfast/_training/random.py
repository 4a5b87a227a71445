"""``numpy.random.RandomState(seed)`` for an int seed, without NumPy's throw-away entropy.

``RandomState(seed)`` first seeds a new MT19937 from the operating system's entropy through
a ``SeedSequence`` (about 0.15 ms: 624 words hashed), then overwrites that state by the
legacy seeding of ``seed``. Every fit makes one or two of them (scikit-learn's
``check_random_state``, a network's initial weights), which is a tenth of a small fit.
Here the first step gets a blank ``ISeedSequence`` (NumPy's documented interface for
custom seed sequences), and ``RandomState.seed(seed)`` then does the same legacy seeding
as the constructor: the same state, the same draws, the same error for a bad seed.
"""

import numpy as np
from numpy.random.bit_generator import ISeedSequence


class _BlankSeedSequence(ISeedSequence):
    """Zero words: a placeholder state that the legacy seeding overwrites at once."""

    def generate_state(self, n_words, dtype=np.uint32):
        return np.zeros(n_words, dtype=dtype)


_BLANK = _BlankSeedSequence()


def legacy_random_state(seed):
    """A new ``numpy.random.RandomState`` in the state ``RandomState(seed)`` starts in.

    Parameters
    ----------
    seed : int
        0 to 2**32 - 1 (NumPy's ValueError otherwise).

    Returns
    -------
    numpy.random.RandomState
    """
    random_state = np.random.RandomState(np.random.MT19937(_BLANK))
    random_state.seed(seed)
    return random_state
