"""Outcome data from production, for `train-router --from-ledger`: the ledger's answered
requests whose features it kept (ledger.store_features), labelled by what happened to them.
No prompt text is read: the rows carry the feature vector the learned router reads.

Each request's "weak" side is the answer of the tier it started at (the cheap side the router
chose), its "strong" side the answer a stronger tier would give (1 unless a verdict says
otherwise):
- the escalator found the starting tier's answer weak: weak 0, strong 1, or the user's
  feedback score on the answer that was served in its place;
- the starting tier's answer was served: weak 1, or 0 when judge sampling found it fell short
  of the top tier's, or the user's feedback score on it (which wins); strong 1;
- otherwise (the request started at the top tier, or a stronger tier answered because the
  cheaper one failed to answer at all) the cheap side's quality is unknown: not labelled.

At most MAX_ROWS of the window's most recent rows are read, so memory and training time stay
bounded whatever the ledger holds; the report says how many labelled ones were left out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import psycopg

from shared.db import first_line
from shared.messages import SampleVerdict

from .outcome_data import Outcomes
from .router_model import STORED_DTYPE

# The rows training reads: a training set's memory is MAX_ROWS x the vector (4,102 float32 for
# the lexical set: 330 MB) and a few copies of it, and each of the ~170 ridge fits of a training
# run takes seconds (measured: 2.3 s at 20,000 x 4,102).
MAX_ROWS = 20_000
WINDOW = """
r.status = 'ok' AND r.features IS NOT NULL AND r.start_tier IS NOT NULL
AND r.start_tier <> %(top)s AND r.finished_at >= now() - make_interval(days => %(days)s)
"""
ROWS = f"""
SELECT r.trace_id, r.feature_set, r.features, r.start_tier, r.tier, f.score,
       coalesce(a.first_weak, false), a.sampled_short
FROM requests r
LEFT JOIN feedback f ON f.trace_id = r.trace_id
LEFT JOIN LATERAL (
    SELECT bool_or(outcome = 'weak' AND tier = r.start_tier) AS first_weak,
           bool_or(reason = %(fell_short)s) FILTER (
               WHERE outcome = 'sample' AND reason IN (%(fell_short)s, %(as_good)s)
           ) AS sampled_short
    FROM attempts WHERE trace_id = r.trace_id
) a ON true
WHERE {WINDOW}
ORDER BY r.finished_at DESC
LIMIT %(cap)s
"""
# The older rows past the cap whose cheap side is known (label's rule): labels left out.
LEFT_OUT = f"""
SELECT count(*) FROM (
    SELECT r.trace_id, r.start_tier, r.tier FROM requests r WHERE {WINDOW}
    ORDER BY r.finished_at DESC OFFSET %(cap)s
) r
WHERE r.tier = r.start_tier OR EXISTS (
    SELECT 1 FROM attempts a
    WHERE a.trace_id = r.trace_id AND a.outcome = 'weak' AND a.tier = r.start_tier)
"""


@dataclass(frozen=True)
class LedgerOutcomes:
    outcomes: Outcomes  # its `prompts` are the requests' trace ids: the ledger keeps no text
    x: np.ndarray
    feature_set: str
    report: dict  # how many rows were read, labelled, and by what


def read_ledger(database_url: str, top_tier: str, days: int, cap: int = MAX_ROWS
                ) -> LedgerOutcomes:
    """The labelled rows among the `cap` most recent of the last `days` days; ConnectionError,
    in one line, when the ledger cannot be read (down, or its schema not migrated)."""
    query = {"top": top_tier, "days": days, "cap": cap,
             "fell_short": SampleVerdict.FELL_SHORT.value, "as_good": SampleVerdict.AS_GOOD.value}
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            rows = conn.execute(ROWS, query).fetchall()
            left_out = conn.execute(LEFT_OUT, query).fetchone()
    except psycopg.errors.UndefinedTable as exc:
        raise ConnectionError(f"the ledger's schema is older than this version "
                              f"({first_line(exc)}): run `smart-router migrate`") from None
    except psycopg.Error as exc:
        raise ConnectionError(f"cannot read the ledger at DATABASE_URL: {first_line(exc)}"
                              ) from None
    return label(rows, left_out=left_out[0] if left_out else 0)



def label(rows: list[tuple], left_out: int = 0) -> LedgerOutcomes:
    """Rows of ROWS to outcomes: those of the most common feature set and vector length (a
    router model changed in the window changes the set), each with its label; a vector that is
    not float16 (an odd or empty blob) is skipped and counted."""
    counts = Counter[str]()
    shapes = Counter((row[1], len(row[2])) for row in rows if _readable(row[2]))
    feature_set, size = shapes.most_common(1)[0][0] if shapes else ("lexical", 0)
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    weak: list[float] = []
    strong: list[float] = []
    for trace_id, row_set, features, start_tier, tier, score, first_weak, sampled_short in rows:
        if not _readable(features):
            counts["malformed"] += 1
            continue
        if (row_set, len(features)) != (feature_set, size):
            counts["other_feature_set"] += 1
            continue
        vector = np.frombuffer(features, dtype=STORED_DTYPE).astype(np.float32)
        if not np.isfinite(vector).all():
            counts["unreadable"] += 1
            continue
        if first_weak:
            pair = (0.0, 1.0 if score is None else float(score))
            counts["weak_verdicts"] += 1
        elif tier == start_tier:
            sampled = 1.0 if sampled_short is None else float(not sampled_short)
            pair = (sampled if score is None else float(score), 1.0)
            counts["served_by_the_start_tier"] += 1
            counts["sample_verdicts"] += sampled_short is not None
        else:
            counts["cheap_side_unknown"] += 1
            continue
        counts["with_feedback"] += score is not None
        ids.append(trace_id)
        vectors.append(vector)
        weak.append(pair[0])
        strong.append(pair[1])
    weak_scores, strong_scores = np.array(weak), np.array(strong)
    outcomes = Outcomes(ids, weak_scores, strong_scores, "start_tier", "stronger_tier",
                        weak_scores)
    x = np.vstack(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    report = {"rows": len(rows), "labelled": len(ids), "feature_set": feature_set,
              **{k: counts[k] for k in ("weak_verdicts", "served_by_the_start_tier",
                                        "sample_verdicts", "with_feedback",
                                        "cheap_side_unknown", "other_feature_set",
                                        "unreadable", "malformed")},
              "left_out": left_out}
    return LedgerOutcomes(outcomes, x, feature_set, report)


def _readable(features: bytes) -> bool:
    """Whole float16 values: a blob of odd (or no) length cannot be a stored vector."""
    return len(features) > 0 and len(features) % 2 == 0
