"""Train the offline classifier: `python -m services.classifier.train` (needs the `train` extra).

1. Reads data/prompts/*.jsonl, drops duplicates, and splits it by a hash of each prompt: about
   20% goes to data/test.jsonl, the rest to data/train.jsonl. The split is stable: adding prompts
   never moves an old one to the other side. Nothing below reads the test split.
2. Chooses each model's regularisation and the cascade threshold by 5-fold cross-validation on
   the train split: the threshold is the lowest confidence at which the fast model alone is
   about as accurate as the full model, as long as it still answers most prompts.
3. Chooses the default `classifier.bias` on the same cross-validated predictions (see
   `choose_bias`); the test split never takes part in a choice.
4. Fits both models on the whole train split and writes model/local.npz, the bias and its
   cross-validated figures in its metadata (`classifier.bias` in default_config.toml must equal
   it; a test checks).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from shared.config import DIFFICULTIES

from . import features
from .decision import decide
from .e5_graph import POOLED_LAYERS
from .encoder import Encoder
from .local_model import MODEL_PATH

DATA = Path(__file__).with_name("data")
TEST_PERCENT = 20
EMBEDDING_SCALE = 1.5
MIN_FAST_SHARE = 0.55  # the fast model must answer at least this share, to keep p50 low
C_GRID = (30.0,)  # best of 3..100 by cross-validation (November 2026)
BIAS_GRID = tuple(round(0.05 * i, 2) for i in range(21))
# Issue #4's targets for the default bias, on prompts the model has not seen.
TARGET_ACCURACY = 0.90
TARGET_COMPLEX_AS_SIMPLE = 0.01
Z_95 = 1.645  # one-sided 95%


def load_prompts() -> list[dict]:
    seen: set[str] = set()
    rows = []
    for path in sorted((DATA / "prompts").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            key = _normal(row["prompt"])
            if key not in seen and row["label"] in DIFFICULTIES:
                seen.add(key)
                rows.append({"prompt": row["prompt"], "label": row["label"], "lang": row["lang"]})
    return rows


def split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    def in_test(row: dict) -> bool:
        digest = hashlib.sha256(_normal(row["prompt"]).encode()).digest()
        return int.from_bytes(digest[:4]) % 100 < TEST_PERCENT

    train = [r for r in rows if not in_test(r)]
    test = [r for r in rows if in_test(r)]
    return train, test


def write_jsonl(path: Path, rows: list[dict]) -> None:
    rows = sorted(rows, key=lambda r: (r["lang"], r["label"], r["prompt"]))
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def lexical_matrix(texts: list[str], idf: np.ndarray, counts: list) -> csr_matrix:
    vectorize = features.Vectorizer(idf)
    data, indices, indptr = [], [], [0]
    for text, grams in zip(texts, counts, strict=True):
        idx, val = vectorize(text, grams)
        indices.append(idx)
        data.append(val)
        indptr.append(indptr[-1] + len(idx))
    return csr_matrix((np.concatenate(data), np.concatenate(indices), np.array(indptr)),
                      shape=(len(texts), features.DIMENSIONS))


def embed_all(texts: list[str], cache: Path) -> np.ndarray:
    """e5 embeddings, cached outside the repo by the token ids e5 actually reads, so re-training
    costs seconds and a changed excerpt rule cannot reuse a stale vector."""
    stored = dict(np.load(cache)) if cache.exists() else {}
    encoder = Encoder()
    excerpts = [encoder.token_ids(t) for t in texts]
    graph = repr(POOLED_LAYERS).encode()  # a vector of other layers is another vector
    keys = [hashlib.sha256(graph + np.array(ids, np.int32).tobytes()).hexdigest()
            for ids in excerpts]
    missing = {k: ids for k, ids in zip(keys, excerpts, strict=True) if k not in stored}
    if missing:
        _say(f"embedding {len(missing)} prompts with e5 …")
        stored.update({k: encoder.embed_ids(ids) for k, ids in missing.items()})
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **stored)
    return np.array([stored[k] for k in keys])


def best_c(x, y, folds) -> tuple[float, np.ndarray]:
    """The regularisation with the best cross-validated accuracy, and its CV probabilities."""
    results = []
    for c in C_GRID:
        proba = cross_val_predict(LogisticRegression(C=c, max_iter=5000), x, y, cv=folds,
                                  method="predict_proba")
        results.append(((proba.argmax(1) == y).mean(), c, proba))
    _, c, proba = max(results, key=lambda r: r[0])
    return c, proba


def choose_threshold(fast: np.ndarray, full: np.ndarray, y: np.ndarray) -> float:
    full_accuracy = (full.argmax(1) == y).mean()
    chosen = 0.5
    for threshold in np.arange(0.50, 1.0, 0.01):
        confident = fast.max(1) >= threshold
        if confident.mean() < MIN_FAST_SHARE:
            break
        chosen = float(threshold)
        cascade = np.where(confident, fast.argmax(1), full.argmax(1))
        if (cascade == y).mean() >= full_accuracy - 0.003:
            break
    return chosen


def choose_bias(proba: np.ndarray, y: np.ndarray) -> tuple[float, list[dict]]:
    """The lowest bias at which the cross-validated cascade meets both targets with room for
    sampling error: accuracy at least TARGET_ACCURACY, and the one-sided 95% upper bound
    (Wilson) of the share of complex prompts tagged simple at most TARGET_COMPLEX_AS_SIMPLE.
    A point estimate at the target would miss it on new prompts about half the time; the
    lowest such bias, because more bias costs accuracy and money. Returns it and the grid."""
    complex_rows = y == DIFFICULTIES.index("complex")
    simple = DIFFICULTIES.index("simple")
    grid = []
    for bias in BIAS_GRID:
        tags = np.array([DIFFICULTIES.index(decide(p, bias)[0]) for p in proba])
        as_simple = int((tags[complex_rows] == simple).sum())
        grid.append({"bias": bias, "accuracy": round(float((tags == y).mean()), 4),
                     "complex_tagged_simple": round(as_simple / complex_rows.sum(), 4),
                     "upper_95": round(wilson_upper(as_simple, int(complex_rows.sum())), 4)})
    meeting = [g for g in grid if g["accuracy"] >= TARGET_ACCURACY
               and g["upper_95"] <= TARGET_COMPLEX_AS_SIMPLE]
    if not meeting:
        raise SystemExit("no bias meets the targets in cross-validation: see the grid\n"
                         + json.dumps(grid))
    return meeting[0]["bias"], grid


def wilson_upper(successes: int, trials: int, z: float = Z_95) -> float:
    """Upper end of the Wilson score interval for a proportion."""
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return float((centre + spread) / (1 + z * z / trials))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "smart-router" / "e5-int8-train.npz")
    args = parser.parse_args(argv)
    started = time.monotonic()
    train, test = split(load_prompts())
    write_jsonl(DATA / "train.jsonl", train)
    write_jsonl(DATA / "test.jsonl", test)
    _say(f"{len(train)} train / {len(test)} test prompts, "
         f"{len({r['lang'] for r in train + test})} languages")

    texts = [r["prompt"] for r in train]
    y = np.array([DIFFICULTIES.index(r["label"]) for r in train])
    counts = [features.ngram_counts(t) for t in texts]
    idf = features.inverse_document_frequency(counts)
    lexical = lexical_matrix(texts, idf, counts)
    embeddings = embed_all(texts, args.cache) * EMBEDDING_SCALE
    combined = hstack([lexical, csr_matrix(embeddings)]).tocsr()

    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    fast_c, fast_cv = best_c(lexical, y, folds)
    full_c, full_cv = best_c(combined, y, folds)
    threshold = choose_threshold(fast_cv, full_cv, y)
    confident = fast_cv.max(1) >= threshold
    cascade_cv = np.where(confident, fast_cv.argmax(1), full_cv.argmax(1))
    _say(f"cross-validated on train: fast {(fast_cv.argmax(1) == y).mean():.3f} (C={fast_c}), "
         f"full {(full_cv.argmax(1) == y).mean():.3f} (C={full_c}), cascade "
         f"{(cascade_cv == y).mean():.3f} at threshold {threshold:.2f} "
         f"(fast answers {confident.mean():.0%})")
    bias, bias_grid = choose_bias(np.where(confident[:, None], fast_cv, full_cv), y)
    chosen = next(g for g in bias_grid if g["bias"] == bias)
    _say(f"bias {bias}: cross-validated accuracy {chosen['accuracy']:.1%}, complex tagged "
         f"simple {chosen['complex_tagged_simple']:.2%} (95% bound {chosen['upper_95']:.2%})")

    fast = LogisticRegression(C=fast_c, max_iter=5000).fit(lexical, y)
    full = LogisticRegression(C=full_c, max_iter=5000).fit(combined, y)
    meta = {
        "threshold": threshold,
        "embedding_scale": EMBEDDING_SCALE,
        "fast_c": fast_c,
        "full_c": full_c,
        "train_prompts": len(train),
        "train_labels": dict(Counter(r["label"] for r in train)),
        "cv_cascade_accuracy": round(float((cascade_cv == y).mean()), 4),
        "bias": bias,
        "bias_cv": bias_grid,
        "trained": datetime.date.today().isoformat(),
    }
    MODEL_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(
        MODEL_PATH,
        fast_w=fast.coef_.T.astype(np.float16), fast_b=fast.intercept_.astype(np.float32),
        full_w=full.coef_.T.astype(np.float16), full_b=full.intercept_.astype(np.float32),
        idf=idf.astype(np.float16), meta=json.dumps(meta),
    )
    _say(f"wrote {MODEL_PATH} ({MODEL_PATH.stat().st_size / 1e6:.1f} MB) "
         f"in {time.monotonic() - started:.0f} s")
    return 0


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
