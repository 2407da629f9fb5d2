"""Writes correctness.jsonl: answers labelled right or wrong, written for this project (no public
benchmark's questions or answers). Arithmetic word problems come from templates with numbers
drawn from a fixed seed; their wrong answers make the mistakes models make: an arithmetic slip
carried through, a wrong set-up with correct arithmetic, a final number that contradicts the
working, a bare wrong number. Factual and multiple-choice questions each get one right and one
confidently wrong answer. Run: python -m services.escalator.data.build_correctness
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).with_name("correctness.jsonl")
SEED = 17
WORD_PROBLEMS = 200
TIMES = "\u00d7"  # how the worked answers write a product
Steps = list[tuple[str, str, str, float]]  # (left, op, right, result) in the order worked


def _problems() -> list[tuple[str, Callable[[random.Random], tuple[dict, Steps]]]]:
    """(question template, draw) pairs: a draw picks the numbers and works the right steps."""

    def two(op1: str, op2: str, f1, f2, ranges):
        def draw(rng: random.Random) -> tuple[dict, Steps]:
            a, b, c = (rng.randint(*r) for r in ranges)
            p = f1(a, b)
            return {"a": a, "b": b, "c": c}, [(str(a), op1, str(b), p),
                                              (str(p), op2, str(c), f2(p, c))]
        return draw

    mul, add, sub = (lambda x, y: x * y), (lambda x, y: x + y), (lambda x, y: x - y)
    return [
        ("A baker fills {a} trays with {b} rolls each and sells {c} rolls. How many rolls are "
         "left?", two(TIMES, "-", mul, sub, ((3, 12), (6, 24), (5, 30)))),
        ("A train travels at {a} km/h for {b} hours, then another {c} km. How far does it "
         "travel in total?", two(TIMES, "+", mul, add, ((40, 120), (2, 6), (10, 90)))),
        ("Tom saves ${a} a week for {b} weeks, then spends ${c} on a bike. How much money does "
         "he have left?", two(TIMES, "-", mul, sub, ((15, 60), (8, 20), (50, 110)))),
        ("A tank holds {c} litres more than {a} buckets of {b} litres. How many litres does it "
         "hold?", two(TIMES, "+", mul, add, ((4, 15), (8, 20), (5, 40)))),
        ("{a} workers each paint {b} fences a day. How many fences do they paint in {c} days?",
         two(TIMES, TIMES, mul, mul, ((2, 9), (2, 6), (3, 12)))),
        ("Ana is {a} years old and her father is {b} times her age. How old will her father be "
         "in {c} years?", two(TIMES, "+", mul, add, ((6, 14), (3, 5), (2, 15)))),
        ("A recipe needs {a} g of flour per cake. How many grams of flour are needed for {b} "
         "cakes plus {c} g for dusting?",
         two(TIMES, "+", mul, add, ((120, 350), (3, 9), (20, 60)))),
        ("A cinema has {a} rows of {b} seats and {c} seats are taken. How many seats are free?",
         two(TIMES, "-", mul, sub, ((10, 30), (12, 25), (40, 110)))),
        ("A garden is {a} m long and {b} m wide. A fence goes around it with a gate of {c} m. How "
         "many metres of fence are needed?", _perimeter),
        ("A jacket costs ${a} and is discounted by {c}%. What is the sale price in dollars?",
         _discount),
        ("A school needs {b} pens and pens come in packs of {a}. How many packs must it buy?",
         _packs),
    ]


def _perimeter(rng: random.Random) -> tuple[dict, Steps]:
    a, b, c = rng.randint(8, 40), rng.randint(5, 30), rng.randint(1, 4)
    return {"a": a, "b": b, "c": c}, [(str(a), "+", str(b), a + b),
                                      (str(a + b), TIMES, "2", 2 * (a + b)),
                                      (str(2 * (a + b)), "-", str(c), 2 * (a + b) - c)]


def _discount(rng: random.Random) -> tuple[dict, Steps]:
    a, c = rng.choice((40, 60, 80, 120, 150, 200, 240)), rng.choice((10, 20, 25, 30, 50))
    off = a * c // 100
    return {"a": a, "c": c}, [(str(a), TIMES, f"{c}/100", off), (str(a), "-", str(off), a - off)]


def _packs(rng: random.Random) -> tuple[dict, Steps]:
    a, b = rng.randint(6, 15), rng.randint(40, 200)
    packs = math.ceil(b / a)
    return {"a": a, "b": b}, [(str(b), "÷", str(a), round(b / a, 2)),
                              (f"{round(b / a, 2)}", "rounded up", "", packs)]


def _work(steps: Steps) -> str:
    lines = [f"{left} {op} {right} = {_n(result)}" if right else f"{left} {op} = {_n(result)}"
             for left, op, right, result in steps]
    return "First, " + ". Then ".join(lines) + "."


def _n(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _redo(steps: Steps, first_result: float) -> Steps:
    """The steps with the first result replaced and the rest worked from it."""
    ops = {TIMES: lambda x, y: x * y, "+": lambda x, y: x + y, "-": lambda x, y: x - y}
    out = [(steps[0][0], steps[0][1], steps[0][2], first_result)]
    for left, op, right, _ in steps[1:]:
        carried = first_result if left == _n(steps[0][3]) else float(left)
        value = ops[op](carried, float(right)) if op in ops else math.ceil(carried)
        out.append((_n(carried), op, right, value))
        first_result = value
    return out


def word_problem_rows(rng: random.Random) -> list[dict]:
    rows = []
    templates = _problems()
    for index in range(WORD_PROBLEMS):
        template, draw = templates[index % len(templates)]
        numbers, steps = draw(rng)
        question = template.format(**numbers)
        right = steps[-1][3]
        kind = rng.choices(("right", "slip", "setup", "contradiction", "bare"),
                           weights=(50, 14, 18, 6, 12))[0]
        if kind == "right":
            text = f"{_work(steps)} The answer is {_n(right)}."
        elif kind == "slip":  # a wrong product or sum, carried through correctly
            slipped = steps[0][3] + rng.choice((-10, -2, -1, 1, 2, 10))
            worked = _redo(steps, slipped)
            text = f"{_work(worked)} The answer is {_n(worked[-1][3])}."
        elif kind == "setup":  # the wrong operation at the last step, worked correctly
            left, op, rhs, _ = steps[-1]
            swapped = {"+": "-", "-": "+", TIMES: "+"}.get(op)
            value: float
            if swapped is None:  # rounding down where it must round up
                value = math.floor(float(left))
                text = (f"{_work(steps[:-1])} Rounding, {left} gives {value}. "
                        f"The answer is {value}.")
            else:
                value = float(left) + float(rhs) if swapped == "+" else float(left) - float(rhs)
                text = f"{_work([*steps[:-1], (left, swapped, rhs, value)])} " \
                       f"The answer is {_n(value)}."
            right_or_same = value == right
            if right_or_same:
                continue
        elif kind == "contradiction":  # right working, another number stated at the end
            text = f"{_work(steps)} The answer is {_n(right + rng.choice((-3, 3, 12)))}."
        else:
            text = f"The answer is {_n(right + rng.choice((-20, -5, 4, 15, right)))}."
        rows.append({"prompt": question, "answer": text, "finish_reason": "stop",
                     "label": "right" if kind == "right" else "wrong", "kind": f"math:{kind}",
                     "task": "math", "source": "own"})
    return rows


FACTS = [
    ("What is the chemical symbol for gold?", "Au", "Ag"),
    ("Which planet is closest to the Sun?", "Mercury", "Venus"),
    ("In what year did the Berlin Wall fall?", "1989", "1991"),
    ("What is the capital of Australia?", "Canberra", "Sydney"),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen", "Charlotte Brontë"),
    ("How many bones are in the adult human body?", "206", "212"),
    ("What is the largest ocean on Earth?", "the Pacific Ocean", "the Atlantic Ocean"),
    ("Which element has atomic number 6?", "carbon", "nitrogen"),
    ("What is the capital of Canada?", "Ottawa", "Toronto"),
    ("Who painted 'The Starry Night'?", "Vincent van Gogh", "Claude Monet"),
    ("What is the boiling point of water at sea level in Fahrenheit?", "212 °F", "200 °F"),
    ("Which gas do plants absorb from the air for photosynthesis?", "carbon dioxide", "oxygen"),
    ("In what year did the first person walk on the Moon?", "1969", "1971"),
    ("What is the longest river in South America?", "the Amazon", "the Paraná"),
    ("Who developed the theory of general relativity?", "Albert Einstein", "Max Planck"),
    ("What is the hardest natural mineral?", "diamond", "quartz"),
    ("Which country has the largest population in Africa?", "Nigeria", "Egypt"),
    ("What is the smallest prime number?", "2", "1"),
    ("Which organ in the human body produces insulin?", "the pancreas", "the liver"),
    ("What is the capital of Turkey?", "Ankara", "Istanbul"),
    ("Who was the first President of the United States?", "George Washington",
     "John Adams"),
    ("How many sides does a hexagon have?", "6", "8"),
    ("What is the main language spoken in Brazil?", "Portuguese", "Spanish"),
    ("Which planet is known for its prominent ring system?", "Saturn", "Neptune"),
    ("In what year did World War I begin?", "1914", "1917"),
    ("What is the freezing point of water in Celsius?", "0 °C", "4 °C"),
    ("Who wrote the play 'Hamlet'?", "William Shakespeare", "Christopher Marlowe"),
    ("What is the currency of Japan?", "the yen", "the won"),
    ("Which blood cells carry oxygen?", "red blood cells", "white blood cells"),
    ("What is the tallest mountain on Earth above sea level?", "Mount Everest", "K2"),
    ("What is the capital of Switzerland?", "Bern", "Zurich"),
    ("How many continents are there?", "7", "6"),
    ("Which scientist proposed the three laws of motion?", "Isaac Newton", "Galileo Galilei"),
    ("What is the speed of light in vacuum, roughly, in km per second?", "about 300,000 km/s",
     "about 150,000 km/s"),
    ("Which metal is liquid at room temperature?", "mercury", "gallium"),
    ("What is the largest planet in the Solar System?", "Jupiter", "Saturn"),
    ("In which country are the ancient ruins of Machu Picchu?", "Peru", "Bolivia"),
    ("What is the square root of 144?", "12", "14"),
    ("Who discovered penicillin?", "Alexander Fleming", "Louis Pasteur"),
    ("How many minutes are in a day?", "1,440", "1,240"),
]

CHOICES = [
    ("Which of these numbers is prime?", ("21", "27", "29", "33"), "C"),
    ("Which data structure serves items first in, first out?", ("stack", "queue", "heap",
                                                                 "tree"), "B"),
    ("Which of these is a mammal?", ("shark", "dolphin", "salmon", "octopus"), "B"),
    ("What is 15% of 200?", ("15", "20", "30", "45"), "C"),
    ("Which layer of the atmosphere contains most of the ozone?", ("troposphere",
                                                                   "stratosphere",
                                                                   "mesosphere",
                                                                   "thermosphere"), "B"),
    ("Which HTTP status code means 'Not Found'?", ("200", "301", "404", "500"), "C"),
    ("Which of these fractions equals 0.75?", ("2/3", "3/4", "4/5", "5/8"), "B"),
    ("Which instrument measures atmospheric pressure?", ("thermometer", "hygrometer",
                                                         "barometer", "anemometer"), "C"),
    ("Which sorting algorithm has worst-case O(n log n) time?", ("quicksort", "merge sort",
                                                                 "bubble sort",
                                                                 "insertion sort"), "B"),
    ("Which is the largest: 2^10, 10^3, 3^6 or 5^4?", ("2^10", "10^3", "3^6", "5^4"), "A"),
    ("Which gas makes up most of Earth's atmosphere?", ("oxygen", "carbon dioxide",
                                                        "nitrogen", "argon"), "C"),
    ("Which shape has exactly one pair of parallel sides (US usage)?", ("square",
                                                                        "trapezoid",
                                                                        "rhombus",
                                                                        "kite"), "B"),
    ("What is the next number: 2, 6, 12, 20, 30, ...?", ("36", "40", "42", "44"), "C"),
    ("Which vitamin does the skin make in sunlight?", ("vitamin A", "vitamin C", "vitamin D",
                                                       "vitamin K"), "C"),
    ("Which SQL clause filters groups after aggregation?", ("WHERE", "HAVING", "ORDER BY",
                                                            "LIMIT"), "B"),
    ("A car goes 150 km in 2.5 hours. What is its average speed?", ("50 km/h", "60 km/h",
                                                                    "65 km/h", "75 km/h"),
     "B"),
    ("Which of these is a noble gas?", ("chlorine", "neon", "sodium", "hydrogen"), "B"),
    ("How many degrees are in the interior angles of a triangle?", ("90", "180", "270", "360"),
     "B"),
    ("Which planet has the shortest year?", ("Mercury", "Venus", "Earth", "Mars"), "A"),
    ("Which Git command records staged changes?", ("git add", "git commit", "git push",
                                                   "git fetch"), "B"),
    ("What is the median of 3, 9, 4, 7, 5?", ("4", "5", "6", "7"), "B"),
    ("Which of these is an input device?", ("monitor", "printer", "keyboard", "speaker"), "C"),
    ("Which ocean lies between Africa and Australia?", ("Atlantic", "Indian", "Arctic",
                                                        "Southern"), "B"),
    ("How many bits are in a byte?", ("4", "8", "16", "32"), "B"),
    ("What is 7 * 8?", ("54", "56", "58", "64"), "B"),
    ("Which organelle produces most of a cell's ATP?", ("nucleus", "ribosome",
                                                         "mitochondrion",
                                                         "Golgi apparatus"), "C"),
    ("Which of these numbers is divisible by 9?", ("123", "234", "345", "456"), "B"),
    ("Which unit measures electrical resistance?", ("volt", "ampere", "ohm", "watt"), "C"),
    ("Which continent is the Sahara Desert on?", ("Asia", "Africa", "Australia",
                                                  "South America"), "B"),
    ("What is the perimeter of a square with side 7 cm?", ("14 cm", "21 cm", "28 cm",
                                                           "49 cm"), "C"),
    ("Which protocol assigns IP addresses automatically?", ("DNS", "DHCP", "FTP", "SMTP"),
     "B"),
    ("Which of these is the largest unit?", ("kilobyte", "megabyte", "gigabyte", "terabyte"),
     "D"),
    ("Which country first gave women the vote nationally (1893)?", ("United Kingdom",
                                                                     "New Zealand",
                                                                     "United States",
                                                                     "France"), "B"),
    ("A shirt costs $25 after a 50% discount. What was the original price?",
     ("$12.50", "$37.50", "$50", "$75"), "C"),
    ("Which of these animals is cold-blooded?", ("penguin", "bat", "lizard", "whale"), "C"),
    ("What is the value of 3^4?", ("12", "64", "81", "243"), "C"),
    ("Which part of a plant carries water from the roots?", ("phloem", "xylem", "stomata",
                                                             "cuticle"), "B"),
    ("Which Python type is immutable?", ("list", "dict", "set", "tuple"), "D"),
    ("If a = 3 and b = 4, what is the hypotenuse of the right triangle?", ("5", "6", "7", "12"),
     "A"),
    ("Which is the chemical formula of table salt?", ("KCl", "NaCl", "CaCO3", "NaOH"), "B"),
]

_FACT_STYLES = ("The answer is {x}.", "{x}.", "It is {x}.", "That would be {x}.")


def fact_rows(rng: random.Random) -> list[dict]:
    rows = []
    for question, right, wrong in FACTS:
        for label, value in (("right", right), ("wrong", wrong)):
            rows.append({"prompt": question, "answer": rng.choice(_FACT_STYLES).format(x=value),
                         "finish_reason": "stop", "label": label, "kind": f"factual:{label}",
                         "task": "factual", "source": "own"})
    return rows


def choice_rows(rng: random.Random) -> list[dict]:
    rows = []
    for question, options, right in CHOICES:
        letters = "ABCD"
        prompt = question + "\n" + "\n".join(f"({letter}) {option}"
                                             for letter, option in zip(letters, options,
                                                                       strict=True))
        wrong = rng.choice([letter for letter in letters if letter != right])
        for label, letter in (("right", right), ("wrong", wrong)):
            option = options[letters.index(letter)]
            rows.append({"prompt": prompt,
                         "answer": f"The answer is ({letter}) {option}.",
                         "finish_reason": "stop", "label": label, "kind": f"choice:{label}",
                         "task": "choice", "source": "own"})
    return rows


def main() -> None:
    rng = random.Random(SEED)
    rows = word_problem_rows(rng) + fact_rows(rng) + choice_rows(rng)
    with OUT.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} answers, {sum(r['label'] == 'wrong' for r in rows)} wrong -> {OUT}")


if __name__ == "__main__":
    main()
