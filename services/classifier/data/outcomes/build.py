"""Rebuild arena-bench-v1.jsonl from git snapshots of two public repositories (see README.md):

    python -m services.classifier.data.outcomes.build ARENA_HARD_AUTO_GIT ROUTELLM_GIT

ARENA_HARD_AUTO_GIT is a clone of lmarena/arena-hard-auto: its history keeps GPT-4's 1-10 grades
of 14 models' answers to the 300 arena-bench-v1 questions (Chatbot Arena prompts). ROUTELLM_GIT
is a clone of lm-sys/RouteLLM, used only for the questions of MT-Bench, MMLU and GSM8K: a prompt
that overlaps any of them is left out (contamination.json says which and why).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
JUDGMENTS = "data/arena-bench-v1/model_judgment"
# The newest commit that still holds each model's grades (the files left the repository later).
GRADES = {
    "Llama-2-70b-chat": "ecbe8b6", "Mistral-7B-Instruct-v0.1": "328eb8a",
    "Mixtral-8x7B-Instruct-v0.1": "ac4ad9a", "Starling-LM-7B-alpha": "2ed85b3",
    "claude-1": "d95f38b", "claude-2.1": "d95f38b", "claude-2": "9783beb",
    "claude-instant-1": "ecbe8b6", "gpt-3.5-turbo-1106": "328eb8a", "gpt-3.5-turbo": "ecbe8b6",
    "gpt-4-0314": "328eb8a", "gpt-4-turbo": "2ed85b3", "openchat_3.5": "328eb8a",
    "palm-2-chat-bison-001": "328eb8a", "vicuna-33b-v1.3": "ecbe8b6",
}
# The pair the shipped router model is trained on (RouteLLM's own pair of the time).
WEAK, STRONG = "Mixtral-8x7B-Instruct-v0.1", "gpt-4-turbo"
REQUIRED = {WEAK, STRONG}
QUESTION = re.compile(r"^\[Question\]\n(.*?)\n\n\[The Start of ", re.S)
SHINGLE = 8  # words; a benchmark question sharing half its 8-word runs with a prompt is a match
MIN_CONTAINED_CHARS = 40


def git_show(repo: Path, spec: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "show", spec], check=True,
                          capture_output=True, text=True).stdout


def arena_bench(repo: Path) -> list[dict]:
    prompts: dict[str, str] = {}
    scores: dict[str, dict[str, float]] = {}
    for name, commit in GRADES.items():
        for line in git_show(repo, f"{commit}:{JUDGMENTS}/{name}.jsonl").split("\n"):
            if not line.strip():
                continue
            row = json.loads(line)
            match = QUESTION.match(row["user_prompt"])
            grade = _grade(row["score"])
            if match is None or grade is None:
                continue  # the judge gave no grade (-1) for this answer
            prompts.setdefault(row["question_id"], match.group(1).strip())
            scores.setdefault(row["question_id"], {})[name] = grade
    return [{"id": qid, "prompt": prompts[qid], "scores": dict(sorted(s.items()))}
            for qid, s in sorted(scores.items()) if REQUIRED <= s.keys()]


def _grade(score: object) -> float | None:
    try:
        grade = float(score)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return grade if 1 <= grade <= 10 else None


def benchmark_questions(repo: Path) -> dict[str, list[str]]:
    mt_bench = [turn for line in git_show(repo, "HEAD:routellm/evals/mt_bench/question.jsonl")
                .split("\n") if line.strip() for turn in json.loads(line)["turns"]]
    gsm8k = [row["prompt"] for row in csv.DictReader(io.StringIO(
        git_show(repo, "HEAD:routellm/evals/gsm8k/gsm8k_responses.csv")))]
    listing = git_show(repo, "HEAD:routellm/evals/mmlu/responses/").split("\n")
    mmlu = [row["prompt"] for name in listing if name.endswith(".csv")
            for row in csv.DictReader(io.StringIO(
                git_show(repo, f"HEAD:routellm/evals/mmlu/responses/{name}")))]
    return {"mt-bench": mt_bench, "gsm8k": gsm8k, "mmlu": mmlu}


def normal(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def shingles(text: str) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def contamination(rows: list[dict], benchmarks: dict[str, list[str]]) -> list[dict]:
    """Prompts equal to, containing, contained in, or sharing half the 8-word runs of a
    benchmark question, after lower-casing and keeping only word characters."""
    found = []
    normals = [normal(r["prompt"]) for r in rows]
    prompt_shingles = [shingles(n) for n in normals]
    for bench, questions in benchmarks.items():
        for question in questions:
            q = normal(question)
            q_shingles = shingles(q)
            for row, p, p_shingles in zip(rows, normals, prompt_shingles, strict=True):
                contained = min(len(p), len(q)) >= MIN_CONTAINED_CHARS and (q in p or p in q)
                shared = (len(q_shingles & p_shingles) / min(len(q_shingles), len(p_shingles))
                          if q_shingles and p_shingles else 0.0)
                if p == q or contained or shared >= 0.5:
                    found.append({"id": row["id"], "benchmark": bench,
                                  "how": "equal" if p == q else "contained" if contained
                                  else f"shared 8-grams {shared:.2f}"})
    return found


def main(arena_repo: Path, routellm_repo: Path) -> None:
    rows = arena_bench(arena_repo)
    benchmarks = benchmark_questions(routellm_repo)
    found = contamination(rows, benchmarks)
    dropped = {f["id"] for f in found}
    kept = [r for r in rows if r["id"] not in dropped]
    (HERE / "arena-bench-v1.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    (HERE / "contamination.json").write_text(json.dumps({
        "checked_against": {name: len(q) for name, q in benchmarks.items()},
        "prompts": len(rows), "dropped": found}, indent=1) + "\n")
    print(f"{len(kept)} prompts kept, {len(dropped)} dropped as overlapping a benchmark",
          file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
