import pytest

from s2lpo.data.toy import all_problems, make_problem, make_splits, parse_answer
from s2lpo.rewards import get_reward_fn


def test_solution_steps():
    p = make_problem([7, 3, 5, 2], ["-", "*", "+"])
    assert p.prompt == "Q: 7-3*5+2=?"
    assert p.solution == " 3*5=15, 7-15=-8, -8+2=-6. #### -6"
    assert p.answer == -6


def test_every_problem_is_consistent():
    ps = all_problems(3)
    assert len(ps) == 9**3 * 9
    for p in ps[::97]:
        assert p.answer == eval(p.prompt[3:-2])  # noqa: S307 - our own generated digits and operators
        assert parse_answer(p.solution) == p.answer


def test_splits_are_disjoint_and_deterministic():
    s = make_splits(3, 100, 50, 20)
    ids = [p.uid for p in s.sft + s.rl + s.eval]
    assert len(set(ids)) == 170
    assert make_splits(3, 100, 50, 20) == s
    with pytest.raises(ValueError, match="exceeds"):
        make_splits(0, 7000, 10, 10)


@pytest.mark.parametrize(("text", "truth", "reward"), [
    (" 3*5=15. #### 15", "15", 1.0), (" #### -6", "-6", 1.0), (" #### 6", "-6", 0.0),
    (" 3*5=15", "15", 0.0), (" #### ", "1", 0.0), (" #### 1x", "1", 0.0), (" #### 7.", "7", 1.0),
])
def test_reward(text, truth, reward):
    assert get_reward_fn("toy_arith")(text, truth) == reward


def test_unknown_reward():
    with pytest.raises(ValueError, match="reward 'nope' is unknown"):
        get_reward_fn("nope")
