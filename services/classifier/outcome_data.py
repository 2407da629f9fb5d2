"""Outcome data: prompts with a score for a weak and a strong model, the one format read by
`eval-router` and `train-router`.

JSONL, one prompt a line: `{"prompt": "...", "scores": {"weak": 0, "strong": 1}}` (keys are tiers
or model names, two or more, any number where higher is better) or the shorthand
`{"prompt": "...", "weak": 0, "strong": 1}`. Which two keys are compared: the ones named by the
caller; else `weak` and `strong` when every line has them; else the keys with the lowest and the
highest mean score over the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared import jsonl

# Scores past this are refused: their gains (differences, sums over thousands of rows) must stay
# finite through training and evaluation (two of 1.7e308 made APGR NaN and a model no classifier
# would load).
MAX_SCORE = 1e9


@dataclass(frozen=True)
class Outcomes:
    prompts: list[str]
    weak: np.ndarray  # the weak side's score per prompt
    strong: np.ndarray
    weak_key: str
    strong_key: str
    # Each line's mean score of every key but the strong one: with several cheaper models on
    # a line, a less noisy view of how hard the prompt is for the cheap side.
    crowd: np.ndarray

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def gain(self) -> np.ndarray:
        """What sending each prompt up is worth."""
        return self.strong - self.weak

    @property
    def has_gap(self) -> bool:
        return bool(self.strong.mean() > self.weak.mean())

    def subset(self, index: np.ndarray) -> Outcomes:
        return Outcomes([self.prompts[i] for i in index], self.weak[index], self.strong[index],
                        self.weak_key, self.strong_key, self.crowd[index])


def read_outcomes(path: Path, weak: str | None = None, strong: str | None = None) -> Outcomes:
    rows = [_scores_of(row) for row in jsonl.read_objects(path, _problem)]
    if not rows:
        raise ValueError(f"{path} holds no outcome")
    weak_key, strong_key = _pair(rows, weak, strong, path)
    missing = next((n for n, (_, s) in enumerate(rows, 1)
                    if weak_key not in s or strong_key not in s), None)
    if missing is not None:
        raise ValueError(f"{path}: outcome {missing} has no score for '{weak_key}' and "
                         f"'{strong_key}'")
    return Outcomes(
        prompts=[prompt for prompt, _ in rows],
        weak=np.array([s[weak_key] for _, s in rows], dtype=np.float64),
        strong=np.array([s[strong_key] for _, s in rows], dtype=np.float64),
        weak_key=weak_key,
        strong_key=strong_key,
        crowd=np.array([np.mean([v for k, v in s.items() if k != strong_key]) for _, s in rows]),
    )


def _scores_of(row: dict) -> tuple[str, dict[str, float]]:
    scores = row["scores"] if "scores" in row else {k: row[k] for k in ("weak", "strong")}
    return row["prompt"], {key: float(value) for key, value in scores.items()}


def _problem(row: dict) -> str | None:
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        return "needs a non-empty 'prompt'"
    scores = row.get("scores")
    if scores is None:
        if "weak" not in row or "strong" not in row:
            return "needs 'scores' (an object) or both 'weak' and 'strong'"
        scores = {"weak": row["weak"], "strong": row["strong"]}
    if not isinstance(scores, dict) or len(scores) < 2:
        return "'scores' must be an object with two or more keys"
    for key, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"score '{key}' is not a number"
        if not (isinstance(value, int) or math.isfinite(value)) or abs(value) > MAX_SCORE:
            return f"score '{key}' is not a number within +-{MAX_SCORE:g}"
    return None


def _pair(rows: list[tuple[str, dict[str, float]]], weak: str | None, strong: str | None,
          path: Path) -> tuple[str, str]:
    """The two keys compared (see the module's docstring)."""
    if weak and strong:
        if weak == strong:
            raise ValueError("the weak and the strong side must be different keys")
        return weak, strong
    common = set.intersection(*(set(scores) for _, scores in rows))
    if not (weak or strong) and {"weak", "strong"} <= common:
        return "weak", "strong"
    if len(common) < 2:
        raise ValueError(f"{path}: fewer than two score keys are on every line; name them with "
                         "--weak and --strong")
    by_mean = sorted(common, key=lambda key: (np.mean([s[key] for _, s in rows]), key))
    weak = weak or next(k for k in by_mean if k != strong)
    strong = strong or next(k for k in reversed(by_mean) if k != weak)
    return weak, strong
