"""Confident mistakes: a model that masters a checkable prompt still states a wrong final value
now and then, more often the weaker it is; the market calls such an answer "wrong", and a
verifier asked about it answers from the same truth."""

from __future__ import annotations

import json
import re
from collections import Counter

import aiohttp
import openai
from emulator_harness import Emulator

from emulator.mistakes import truth

PROMPTS = [f"A crate holds {n} bottles and a shop buys {n % 7 + 2} crates. How many bottles "
           "does it buy?" for n in range(11, 71)]
FINAL = re.compile(r"Final answer: (\S+)\.$")


async def _answer(client: openai.AsyncOpenAI, model: str, prompt: str) -> tuple[str, str]:
    completion = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], logprobs=True)
    return completion.choices[0].message.content or "", completion.model_extra["emulator_verdict"]


async def test_weaker_models_are_confidently_wrong_more_often(
    openai_client: openai.AsyncOpenAI,
) -> None:
    verdicts: Counter[tuple[str, str]] = Counter()
    for prompt in PROMPTS:
        for model in ("gpt-4o-mini", "gpt-4o"):
            text, verdict = await _answer(openai_client, model, prompt)
            stated = FINAL.search(text)
            assert stated is not None, text
            assert (stated.group(1) == truth(prompt)) == (verdict == "good"), (verdict, text)
            verdicts[model, verdict] += 1

    assert verdicts["gpt-4o-mini", "wrong"] > verdicts["gpt-4o", "wrong"]
    assert verdicts["gpt-4o-mini", "wrong"] > 0
    assert verdicts["gpt-4o-mini", "weak"] == verdicts["gpt-4o", "weak"] == 0


async def test_plain_arithmetic_is_answered_with_its_real_result(
    openai_client: openai.AsyncOpenAI,
) -> None:
    text, verdict = await _answer(openai_client, "gpt-4o", "What is 17 * 23?")

    assert verdict == "good" and text.endswith("Final answer: 391.")


async def test_the_market_verdicts_name_the_wrong_answers(
    emulator: Emulator, openai_client: openai.AsyncOpenAI,
) -> None:
    served = [(await _answer(openai_client, "gpt-4o-mini", p))[1] for p in PROMPTS]
    query = {"answers": [{"provider": "openai", "model": "gpt-4o-mini", "prompt": p}
                         for p in PROMPTS]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{emulator.url}/_emulator/verdicts", json=query) as response:
            assert (await response.json())["verdicts"] == served
    assert "wrong" in served


async def test_a_verifier_judges_answers_by_the_markets_truth(
    openai_client: openai.AsyncOpenAI,
) -> None:
    agreed = Counter()
    for prompt in PROMPTS:
        text, verdict = await _answer(openai_client, "gpt-4o-mini", prompt)
        completion = await openai_client.chat.completions.create(
            model="gpt-4o-mini", response_format={"type": "json_object"},
            messages=[{"role": "system", "content": "Is the answer right? Reply in JSON."},
                      {"role": "user", "content": f"<question>{prompt}</question>\n"
                                                  f"<answer>{text}</answer>"}])
        said = json.loads(completion.choices[0].message.content)["correct"]
        agreed[said == (verdict == "good")] += 1

    assert agreed[True] >= 0.85 * len(PROMPTS)  # the verifier errs at its own rate, not often
