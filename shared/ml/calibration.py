"""Temperature scaling of softmax outputs, shared by the worker (fitting) and the API (serving).

NumPy only: the API imports this module, and it must not pull SciPy or scikit-learn into that
process.
"""

from __future__ import annotations

import math

import numpy as np

# Clip before the logarithm so that an exact zero probability (float32 softmax underflow) gives
# a very negative finite logit instead of -inf, which would turn into NaN after scaling.
_TINY = np.finfo(np.float64).tiny


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale softmax outputs by a temperature: ``softmax(log(p) / T)`` along the last axis.

    The model ends in a softmax, so ``log(p)`` equals its logits up to a constant per row, which
    softmax ignores; scaling the log-probabilities therefore scales the logits. ``T > 1`` softens
    over-confident outputs, ``T < 1`` sharpens them, ``T == 1`` returns the input (renormalized)
    and no temperature changes the arg-max. Returns float64.
    """
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _TINY, None))
    scaled = logits / temperature
    # Subtracting the row maximum keeps exp() in range for any temperature (stable softmax).
    scaled -= scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(scaled)
    return np.asarray(exponentials / exponentials.sum(axis=-1, keepdims=True))
