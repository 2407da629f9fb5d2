"""Rebuild the CRUXEval outcome file from git snapshots of two public repositories (see
README.md; measured, not trained on by the shipped model):

    python -m services.classifier.data.outcomes.cruxeval ZEROEVAL_GIT ROUTELLM_GIT

ZEROEVAL_GIT is a clone of yuchenlin/ZeroEval: `result_dirs/crux/<model>.json` holds each
model's greedy answer to the 800 CRUXEval output-prediction questions (a Python function and an
input; the answer is the output as a literal), asked for as JSON `{"reasoning", "answer"}`. A
model scores 1 on a question when its answer, as text with its quotes stripped, equals the
reference, else 0 (no answer found counts 0), as ZeroEval's own scorer compares them. The parse
here is this project's: the first JSON object in the reply that has an "answer", else the text
after the last `"answer":`. ROUTELLM_GIT serves the contamination check, as in build.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .build import HERE, benchmark_questions, contamination, git_show

COMMIT = "570c6269a2e4930ee06a17e713fece1ba52cf1dd"  # yuchenlin/ZeroEval, 2024-09-24
FOLDER = "result_dirs/crux"
OUT = "cruxeval.jsonl"
_LOOSE_ANSWER = re.compile(r'"answer"\s*:\s*(.*?)\s*}?\s*(?:```)?\s*$', re.DOTALL)


def answer_of(reply: str) -> str | None:
    """The answer a reply gives: from its first JSON object with one, else loosely."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", reply)):
        try:
            value, _ = decoder.raw_decode(reply, start)
        except ValueError:
            continue
        if isinstance(value, dict) and "answer" in value:
            return str(value["answer"])
    loose = _LOOSE_ANSWER.search(reply[reply.rfind('"answer"'):]) if '"answer"' in reply else None
    return loose.group(1) if loose else None


def score(reply: str, reference: str) -> float:
    answer = answer_of(reply)
    if answer is None:
        return 0.0
    given = answer.strip("'\"").replace("\n", "\\n")
    return float(given == str(reference).strip("'\""))


def outcomes(repo: Path) -> list[dict]:
    """One row per question, in the set's order, with every model's 0/1 score on it."""
    listing = git_show(repo, f"{COMMIT}:{FOLDER}/")
    models = sorted(name.removesuffix(".json") for name in listing.split()
                    if name.endswith(".json"))
    rows: dict[str, dict] = {}
    for model in models:
        for item in json.loads(git_show(repo, f"{COMMIT}:{FOLDER}/{model}.json")):
            row = rows.setdefault(item["id"], {"id": item["id"], "prompt": item["question"],
                                               "scores": {}})
            if row["prompt"] != item["question"]:
                raise ValueError(f"{model}: {item['id']} asks another question")
            row["scores"][model] = score((item["output"] or [""])[0], item["answer"])
    return list(rows.values())


def main(zeroeval_repo: Path, routellm_repo: Path) -> None:
    benchmarks = benchmark_questions(routellm_repo)
    rows = outcomes(zeroeval_repo)
    found = contamination(rows, benchmarks)
    dropped = {f["id"] for f in found}
    (HERE / OUT).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                    for r in rows if r["id"] not in dropped))
    record = {"checked_against": {name: len(q) for name, q in benchmarks.items()},
              OUT: {"prompts": len(rows), "dropped": found}}
    (HERE / "contamination-cruxeval.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{OUT}: {len(rows) - len(dropped)} prompts kept, {len(dropped)} dropped as "
          "overlapping a benchmark", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
