"""Rebuild the AlpacaEval 2.0 outcome files from git snapshots of two public repositories (see
README.md; CC BY-NC 4.0 data, for measurement, not for the shipped model's training):

    python -m services.classifier.data.outcomes.alpaca_eval ALPACA_EVAL_GIT ROUTELLM_GIT

ALPACA_EVAL_GIT is a clone of tatsu-lab/alpaca_eval: `results/<model>/<annotator>/
annotations.json` holds, for each of the 805 AlpacaEval prompts, GPT-4-turbo's preference
between the model's answer and gpt4_1106_preview's (the reference). A model's score on a
prompt is the preference minus 1: the judge's probability (the weighted annotator, from its
logprobs) or verdict (the chain-of-thought one, 0, 0.5 or 1) that the model's answer is the
better one; the reference itself scores 0.5. ROUTELLM_GIT serves the contamination check, as in
build.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .build import HERE, benchmark_questions, contamination, git_show

COMMIT = "cd543a1"  # tatsu-lab/alpaca_eval, "Add GPT 4.1 judge (#448)"
REFERENCE = "gpt4_1106_preview"
# Per annotator: the output file and the models whose annotations the snapshot reachable here
# holds (NullModel and gpt4_gamed, adversarial entries, are left out).
SOURCES = {
    "weighted_alpaca_eval_gpt4_turbo": ("alpaca-eval-2.jsonl", """
        FuseChat-Gemma-2-9B-Instruct FuseChat-Llama-3.1-8B-Instruct FuseChat-Llama-3.2-1B-Instruct
        FuseChat-Llama-3.2-3B-Instruct FuseChat-Qwen-2.5-7B-Instruct
        Mixtral-8x7B-Instruct-v0.1_concise OpenHermes-2.5-Mistral-7B Qwen-14B-Chat alpaca-7b
        alpaca-7b_concise alpaca-7b_verbose alpaca-farm-ppo-human alpaca-farm-ppo-sim-gpt4-20k
        baize-v2-13b chatglm2-6b claude-2.1 claude-2.1_concise claude-2 claude-instant-1.2
        claude falcon-40b-instruct falcon-7b-instruct gemma-2b-it gemma-7b-it
        gpt-3.5-turbo-0301 gpt-3.5-turbo-1106 gpt-3.5-turbo-1106_concise
        gpt-3.5-turbo-1106_verbose gpt35_turbo_instruct gpt4_0613_concise gpt4_1106_preview
        humpback-llama2-70b jina-chat minichat-3b minotaur-13b nous-hermes-13b
        oasst-rlhf-llama-33b oasst-sft-llama-33b oasst-sft-pythia-12b openbuddy-falcon-40b-v9
        openbuddy-llama-30b-v7.1 openbuddy-llama2-13b-v11.1 openbuddy-llama2-70b-v10.1 phi-2-sft
        phi-2 pythia-12b-mix-sft text_davinci_001 text_davinci_003 ultralm-13b
        vicuna-13b-v1.5-togetherai vicuna-13b-v1.5 vicuna-13b vicuna-7b-v1.3 vicuna-7b-v1.5
        vicuna-7b wizardlm-13b"""),
    "alpaca_eval_cot_gpt4_turbo_fn": ("alpaca-eval-2-cot.jsonl", """
        Mistral-7B-Instruct-v0.2 Mixtral-8x7B-Instruct-v0.1 alpaca-7b claude-2.1 cohere
        gemini-pro gpt-3.5-turbo-0301 gpt4 gpt4_1106_preview llama-2-70b-chat-hf tulu-2-dpo-70b
        vicuna-33b-v1.3"""),
}


def preferences(repo: Path, annotator: str, models: list[str]) -> list[dict]:
    """One row per prompt, in the eval set's order, with every model the judge scored on it."""
    prompts: list[str] = []
    scores: dict[str, dict[str, float]] = {}
    for model in models:
        rows = json.loads(git_show(repo, f"{COMMIT}:results/{model}/{annotator}/annotations.json"))
        for row in rows:
            if (row["generator_1"], row["generator_2"]) != (REFERENCE, model):
                raise ValueError(f"{model}/{annotator}: a row compares "
                                 f"{row['generator_1']} with {row['generator_2']}")
            if row["instruction"] not in scores:
                prompts.append(row["instruction"])
                scores[row["instruction"]] = {}
            if row["preference"] is not None:
                scores[row["instruction"]][model] = round(float(row["preference"]) - 1.0, 4)
    return [{"id": f"alpaca-eval-{i:03d}", "prompt": p, "scores": dict(sorted(scores[p].items()))}
            for i, p in enumerate(prompts)]


def main(alpaca_eval_repo: Path, routellm_repo: Path) -> None:
    benchmarks = benchmark_questions(routellm_repo)
    record: dict[str, object] = {
        "checked_against": {name: len(q) for name, q in benchmarks.items()}}
    for annotator, (name, models) in SOURCES.items():
        rows = preferences(alpaca_eval_repo, annotator, models.split())
        found = contamination(rows, benchmarks)
        dropped = {f["id"] for f in found}
        (HERE / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                         for r in rows if r["id"] not in dropped))
        record[name] = {"prompts": len(rows), "dropped": found}
        print(f"{name}: {len(rows) - len(dropped)} prompts kept, {len(dropped)} dropped as "
              "overlapping a benchmark", file=sys.stderr)
    (HERE / "contamination-alpaca-eval.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
