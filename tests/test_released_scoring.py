"""The released evaluation's prompts, response limits and answer extraction (``eval.prompts/scorer=released``)
on prepared AIME / CSQA files."""

import json

import pytest

from s2lpo.data.prepare import prepare
from s2lpo.eval.benchmarks import EvalError, load_benchmark
from s2lpo.rewards import get_reward_fn
from s2lpo.rewards.released import extract_choice, extract_math, math_equivalent

MATH = [  # (completion, ground truth, released verdict)
    ("Therefore \\boxed{42}", "42", True),  # the released script's own checks …
    ("The answer is \\frac{14}{3}", "14/3", True),
    ("Answer: 100", "100", True),
    ("The result is 3.14", "3.14", True),
    ("\\boxed{1/2} is the first, \\boxed{3/4} is final", "\\frac{3}{4}", True),  # last box, fraction forms equal
    ("so x = 0.5", "\\frac{1}{2}", True),  # numbers compared as numbers
    ("Answer: 25%", "0.25", True),  # percentages too
    ("Answer: 1,024.", "1024", True),  # thousands comma, trailing period
    ("\\boxed{x=12}", "12", True),  # the ground truth as a substring, as released
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", False),  # nested braces: the box is cut short
    ("We find 7 and then 8", "7", False),  # the last number
    ("no number at all\nfinal line", "12", False),
]
CSQA = [("Answer: C", "C"), ("The correct answer is (B).", "B"), ("B. oven", "B"), ("I think it's E", "E"),
        ("the option D fits", "D"), ("[A]", "A")]


@pytest.mark.parametrize(("completion", "truth", "ok"), MATH)
def test_released_math_extraction(completion, truth, ok):
    assert get_reward_fn("released_math")(completion, truth) == float(ok)
    assert math_equivalent(extract_math(completion), truth) is ok


@pytest.mark.parametrize(("completion", "key"), CSQA)
def test_released_letter_extraction(completion, key):
    assert extract_choice(completion) == key and get_reward_fn("released_mcq")(completion, key) == 1.0


class PlainTokenizer:  # a base model without a chat template: the prompt text as is
    chat_template = None


def test_released_prompts_and_limits(tmp_path):
    src = tmp_path / "aime.jsonl"
    src.write_text(json.dumps({"ID": 1, "Problem": "Find $x$.", "Answer": 3}) + "\n")
    aime = prepare("aime24", src, tmp_path / "out")[0]
    csv = tmp_path / "csqa.jsonl"
    csv.write_text(json.dumps({"id": "q", "question": "Where is milk kept?", "answerKey": "A",
                               "choices": {"label": list("AB"), "text": ["fridge", "oven"]}}) + "\n")
    csqa = prepare("csqa", csv, tmp_path / "out")[0]
    tok = PlainTokenizer()
    b = load_benchmark(aime, tok, "nothink")
    assert b.problems[0].prompt == "Find $x$. /no_think" and b.reward == "released_math"
    assert b.max_new_tokens == 38912
    c = load_benchmark(csqa, tok, "nothink")
    assert c.problems[0].prompt == ("Where is milk kept?\n\nA. fridge\nB. oven\n\nAnswer with only the letter (A, B, C, "
                                    "D, or E). /no_think")
    assert c.reward == "released_mcq" and c.max_new_tokens == 8192
    assert load_benchmark(aime, tok, "think").problems[0].prompt.endswith(" /think")
    mv = load_benchmark(aime, tok, "nothink", scorer="math_verify", prompts="prepared", max_new_tokens=512)
    assert mv.reward == "math" and "\\boxed{}" in mv.problems[0].prompt and mv.max_new_tokens == 512
    with pytest.raises(EvalError, match="eval.scorer='exact' is unknown"):
        load_benchmark(aime, tok, "nothink", scorer="exact")
