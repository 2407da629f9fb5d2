"""From probabilities to a tag, with the cost/quality knob.

`bias` (0..1) is a prior toward higher tiers: each tier's probability is weighted by
exp(BIAS_STRENGTH * bias * tier) before the most likely tag is taken. At 0 the classifier takes
its best guess; higher values send unsure prompts up a tier, trading money for quality
(under-routing costs quality, over-routing only costs money). `smart-router eval` shows the
effect of several values.
"""

from __future__ import annotations

import numpy as np

from shared.config import DIFFICULTIES, Difficulty

BIAS_STRENGTH = 3.0


def decide(probabilities: np.ndarray, bias: float) -> tuple[Difficulty, float]:
    """The tag, and the model's probability for it (its confidence)."""
    weighted = probabilities * np.exp(BIAS_STRENGTH * bias * np.arange(len(DIFFICULTIES)))
    choice = int(np.argmax(weighted))
    return DIFFICULTIES[choice], float(probabilities[choice])
