import pytest

from s2lpo.algo.plan import plan_group
from s2lpo.algo.schedule import alpha, split_group


def table(G, t_mix, steps, schedule="linear"):
    return [split_group(i, G, t_mix, schedule)[0] for i in range(1, steps + 1)]


@pytest.mark.parametrize(
    ("G", "t_mix", "steps", "expected"),
    [
        # alpha = 1, 2/3, 1/3, 0 -> ceil(8a) = 8, 6 (5.33), 3 (2.67), 0
        (8, 4, 6, [8, 6, 3, 0, 0, 0]),
        # alpha = 1 - (i-1)/10: ceil(10a) = 10 - (i-1) exactly; step 8 is the float trap (1 - 7/10) * 10
        (10, 11, 12, [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]),
        # alpha = 1, 1/2, 0 with odd G: ceil(2.5) = 3
        (5, 3, 4, [5, 3, 0, 0]),
        (16, 2, 3, [16, 0, 0]),
        # alpha = 1 - (i-1)/4: 12, 9, 6, 3, 0
        (12, 5, 5, [12, 9, 6, 3, 0]),
        # G=7, T=4: 7, ceil(14/3)=5, ceil(7/3)=3, 0
        (7, 4, 5, [7, 5, 3, 0, 0]),
    ],
)
def test_linear_table(G, t_mix, steps, expected):
    assert table(G, t_mix, steps) == expected
    for i in range(1, steps + 1):
        ne, nl = split_group(i, G, t_mix)
        assert ne + nl == G


def test_float_pitfall_is_avoided():
    # in floats: math.ceil((1 - 7/10) * 10) == 4; the exact count is 3
    assert split_group(8, 10, 11) == (3, 7)


def test_t_mix_zero_is_plain_grpo():
    assert [split_group(i, 8, 0) for i in (1, 2, 100)] == [(0, 8)] * 3


def test_t_mix_one_is_rejected():
    with pytest.raises(ValueError, match="t_mix=1"):
        split_group(1, 8, 1)


@pytest.mark.parametrize("bad", [0, -1])
def test_step_is_one_based(bad):
    with pytest.raises(ValueError, match="1-based"):
        split_group(bad, 8, 4)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="schedule='exp'"):
        split_group(1, 8, 4, "exp")


def test_ablation_schedules():
    # cosine: alpha = (1 + cos(pi (i-1)/(T-1)))/2 with T=5: 1, .8536, .5, .1464, 0 -> ceil(8a) = 8, 7, 4, 2, 0
    assert table(8, 5, 6, "cosine") == [8, 7, 4, 2, 0, 0]
    assert table(8, 3, 5, "step") == [8, 8, 8, 0, 0]
    assert table(8, 3, 5, "constant") == [4, 4, 4, 0, 0]
    assert table(7, 2, 3, "constant") == [4, 4, 0]
    assert split_group(1, 8, 1, "step") == (8, 0)  # step/constant have no division by T-1
    assert alpha(3, 5, "cosine") == 0.5


def test_group_plan():
    p = plan_group(2, 8, 4, n_guided=2, guidance_length=5)  # 6 explorer, 2 learner -> 2 guided, 0 own
    assert (p.n_explorer, p.n_guided, p.n_learner) == (6, 2, 0)
    p = plan_group(5, 8, 4, n_guided=2, guidance_length=5)
    assert p.sources == ["guided"] * 2 + ["learner"] * 6
    assert plan_group(5, 8, 4, n_guided=2, guidance_length=0).n_guided == 0
    assert plan_group(3, 4, 4).sources == ["explorer", "explorer", "learner", "learner"]  # alpha = 1/3
    with pytest.raises(ValueError, match="n_guided"):
        plan_group(1, 4, 0, n_guided=5, guidance_length=1)
