"""Converts HaluEval's general set (github.com/RUCAIBox/HaluEval, data/general_data.json, MIT
licence) to eval-escalation's right|wrong format: 4,507 ChatGPT answers to Alpaca queries that
people labelled hallucinated or not; a hallucinated answer counts as wrong. The data is not
copied here. Run: python -m services.escalator.data.halueval general_data.json out.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from services.escalator.verify import task_type

SOURCE = "HaluEval general (MIT)"


def convert(source: Path, out: Path) -> int:
    rows = 0
    with source.open(encoding="utf-8") as lines, out.open("w", encoding="utf-8") as sink:
        for line in lines:
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("hallucination") not in ("yes", "no"):
                continue
            sink.write(json.dumps({
                "prompt": item["user_query"], "answer": item["chatgpt_response"],
                "finish_reason": "stop", "label": "wrong" if item["hallucination"] == "yes"
                else "right", "task": task_type(item["user_query"]), "source": SOURCE,
            }, ensure_ascii=False) + "\n")
            rows += 1
    return rows


if __name__ == "__main__":
    print(f"{convert(Path(sys.argv[1]), Path(sys.argv[2]))} answers -> {sys.argv[2]}")
