"""`dapo` reproduces verl's DAPO scorer (what verl trains on for data_source=math_dapo) on realistic completions;
`math` (math-verify) stays an option and disagrees with it where the two define "correct" differently."""

import pytest

from s2lpo.rewards import get_reward_fn
from s2lpo.verl_ext.reward import compute_score

R = "Let me work through this carefully. First, I set up the equation and simplify both sides. "
CASES = [
    # (completion, ground truth)
    (R + "So the total is 42.\nAnswer: 42", "42"),
    (R + "Hence the result.\nAnswer: $42$", "42"),
    (R + "Therefore the answer is $\\boxed{42}$.", "42"),
    (R + "Answer: \\frac{1}{2}", "1/2"),
    (R + "Answer: 0.5", "\\frac{1}{2}"),
    (R + "Answer: 1,000", "1000"),
    (R + "Answer: 42 degrees", "42"),
    (R + "The answer is 42.", "42"),
    (R + "We get \\boxed{41} at first, but correcting the sign:\nAnswer: 42", "42"),
    (R + "Answer: 7\n\nWait, let me double check. Actually the count is off by one, so it is 8.", "8"),
    (R + "Answer: x = 5", "5"),
    (R + "Answer: \\sqrt{2}", "\\sqrt{2}"),
    (R + "Answer: 2\\sqrt{2}", "\\sqrt{8}"),
    (R + "Answer: 3/4", "\\frac{3}{4}"),
    (R + "Answer: \\dfrac{3}{4}", "\\frac{3}{4}"),
    (R + "Answer: 12.0", "12"),
    (R + "Answer: 012", "12"),
    (R + "Answer: \\text{(B)}", "B"),
    (R + "Answer: 10%", "10"),
    (R + "Answer: \\$25", "25"),
    (R + "Answer: 25 dollars", "25"),
    (R + "Answer: -3", "-3"),
    (R + "Answer: - 3", "-3"),
    (R + "Answer: 3", "-3"),
    (R + "Answer: \\pi", "\\pi"),
    (R + "Answer: 2\\pi", "2\\pi"),
    (R + "Answer: 6.283", "2\\pi"),
    (R + "Answer: (1, 2)", "(1,2)"),
    (R + "Answer: (2, 1)", "(1,2)"),
    (R + "Answer: 1, 2", "1,2"),
    (R + "Answer: 2^{10}", "1024"),
    (R + "Answer: 1024", "1024"),
    (R + "Answer: 1024.", "1024"),
    (R + "**Answer:** 1024", "1024"),
    (R + "Answer: **1024**", "1024"),
    (R + "answer: 1024", "1024"),
    (R + "Final Answer: The final answer is $1024$. I hope it is correct.", "1024"),
    (R + "\\[\\boxed{\\frac{5}{6}}\\]", "\\frac{5}{6}"),
    (R + "\\boxed{\\frac56}", "\\frac{5}{6}"),
    (R + "\\boxed{5/6}", "\\frac{5}{6}"),
    (R + "Answer: 5/6", "5/6"),
    (R + "Answer: \\frac{10}{12}", "\\frac{5}{6}"),
    (R + "Answer: 1.5", "3/2"),
    (R + "Answer: 3/2", "3/2"),
    (R + "Answer: 100\\text{ cm}", "100"),
    (R + "Answer: 100 \\text{cm}^2", "100"),
    (R + "Answer: 1e3", "1000"),
    (R + "Answer: \\infty", "\\infty"),
    (R + "Answer: 24 ways\n", "24"),
    (R + "Answer: 5\\%", "5"),
    (R * 6 + "Answer: 77", "77"),
    ("Answer: 77 " + R * 6 + "I am not sure.", "77"),
]


@pytest.mark.parametrize(("completion", "truth"), CASES)
def test_dapo_is_verls_dapo_scorer(completion, truth):
    from verl.utils.reward_score import default_compute_score

    theirs = default_compute_score("math_dapo", completion, truth)  # verl's own routing for DAPO rows
    ours = get_reward_fn("dapo")(completion, truth)
    assert ours == float(theirs["acc"]) and theirs["score"] == 2 * ours - 1
    # the reward verl calls in our runs: math_dapo rows -> dapo, unless the run chose another training reward
    train = {"split": "train"}
    assert compute_score("math_dapo", completion, truth, extra_info=train) == ours
    assert compute_score("math_dapo", completion, truth, extra_info=train, train_reward="dapo") == ours
    assert compute_score("math_dapo", completion, truth, extra_info=train, train_reward="math") == \
        get_reward_fn("math")(completion, truth)
    # evaluation rows keep their benchmark's reward
    assert compute_score("aime24", completion, truth, extra_info={"split": "test"}, train_reward="dapo") == \
        get_reward_fn("math")(completion, truth)


def test_where_math_verify_and_the_dapo_scorer_disagree():
    math, dapo = get_reward_fn("math"), get_reward_fn("dapo")
    disagree = {i for i, (c, t) in enumerate(CASES) if math(c, t) != dapo(c, t)}
    assert len(CASES) >= 48 and len(disagree) >= 13
    # DAPO's rules: the last "Answer:" line wins over a boxed answer; only the last 300 characters count;
    # answers are compared as normalized strings (no symbolic equivalence, no trailing period)
    assert dapo(*CASES[8]) == 1.0 and math(*CASES[8]) == 0.0
    assert dapo(*CASES[51]) == 0.0 and dapo(*CASES[50]) == 1.0
    assert {3, 4, 12, 13, 32} <= disagree and all(math(*CASES[i]) == 1.0 for i in (3, 4, 12, 13, 32))


def test_math_equals_verls_math_verify_scorer_on_boxed_answers():
    """verl's ``math_verify.compute_score`` parses the whole completion (any number, any expression), ours the
    final answer only (the last box, else the last ``Answer:`` line); on boxed final answers they agree."""
    from verl.utils.reward_score import math_verify as verl_math_verify

    math = get_reward_fn("math")
    boxed = [(c, t) for c, t in CASES if "\\boxed" in c and "Answer" not in c]
    assert len(boxed) >= 4
    for c, t in boxed:
        assert math(c, t) == float(verl_math_verify.compute_score(c, t) > 0), c
