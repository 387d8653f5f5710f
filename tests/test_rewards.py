"""Rewards on tricky equivalent and non-equivalent answers (math-verify), and multiple-choice letters."""

import threading

import pytest

from s2lpo.rewards import get_reward_fn
from s2lpo.rewards.math import extract_math_answer, last_boxed

MATH = [  # completion, ground truth, reward
    (r"so \boxed{\frac{1}{2}}", "0.5", 1.0), (r"\boxed{\dfrac{3}{4}}", "3/4", 1.0),
    ("Answer: 1/2", r"\frac{1}{2}", 1.0), (r"\boxed{2}", "3", 0.0), ("Answer: $x^2+2x+1$", "(x+1)^2", 1.0),
    (r"\boxed{10\%}", "10", 1.0), (r"\boxed{5\text{ cm}}", "5", 1.0), (r"\boxed{[1,2)}", "[1,2)", 1.0),
    (r"\boxed{[1,2]}", "[1,2)", 0.0), (r"\boxed{\sqrt{2}/2}", r"\frac{\sqrt{2}}{2}", 1.0),
    ("no answer here", "1", 0.0), ("Answer: 33", "033", 1.0), (r"\boxed{1,000}", "1000", 1.0),
    (r"\boxed{\pi}", "3.14159", 0.0), (r"first \boxed{7}, finally \boxed{8}", "8", 1.0),
    (r"\boxed{\frac{1}{2}} then Answer: 3", "0.5", 1.0),  # a boxed answer wins over an Answer: line
]
MCQ = [("Answer: C", "C", 1.0), ("The answer is (B).", "B", 1.0), (r"\boxed{D}", "D", 1.0), ("A", "A", 1.0),
       ("Answer: C", "D", 0.0), ("I think it's E", "E", 0.0), ("answer: b", "B", 1.0)]


@pytest.mark.parametrize(("completion", "truth", "reward"), MATH)
def test_math_reward_is_equivalence_not_string_match(completion, truth, reward):
    assert get_reward_fn("math")(completion, truth) == reward


@pytest.mark.parametrize(("completion", "truth", "reward"), MCQ)
def test_multiple_choice_letters(completion, truth, reward):
    assert get_reward_fn("mcq")(completion, truth) == reward


def test_extraction_and_worker_threads():
    assert last_boxed(r"x \boxed{\frac{a}{b^{2}}} y") == r"\frac{a}{b^{2}}"
    assert last_boxed(r"\boxed{unbalanced") is None
    assert extract_math_answer("work...\nAnswer: $42$.") == "42"
    got = []  # math-verify's signal timeouts need the main thread: off in a worker thread
    t = threading.Thread(target=lambda: got.append(get_reward_fn("math")(r"\boxed{0.25}", r"\frac14")))
    t.start()
    t.join()
    assert got == [1.0]
