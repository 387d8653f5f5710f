import pytest

from s2lpo.algo.guidance import AdaptiveGuidance, LinearDecayGuidance, make_guidance


def test_adaptive_trajectory():
    g = AdaptiveGuidance(initial_length=100, max_length=200)
    accs = [0.5, 0.3, 0.2, 0.6, 0.6, 0.9, 0.0, 0.4, 0.1, 0.2, 0.2, 0.2]
    got = [g.update(i + 1, a) for i, a in enumerate(accs)]
    # step 3: mean(.5,.3)=.4 > .2 -> int(min(100*.4/.2, 200)) = 200
    # step 6: mean(.6,.6)=.6 < .9 -> max(int(200*.6/.9), 1) = 133
    # step 9: mean(0,.4)=.2 > .1 -> int(min(133*.2/.1, 200)) = 200
    # step 12: acc == mean -> unchanged
    assert got == [100, 100, 200, 200, 200, 133, 133, 133, 200, 200, 200, 200]


def test_adaptive_zero_accuracy_keeps_length_and_floor_is_one():
    g = AdaptiveGuidance(initial_length=3, max_length=10)
    assert [g.update(i, a) for i, a in enumerate([0.0, 0.0, 0.0], 1)] == [3, 3, 3]
    g = AdaptiveGuidance(initial_length=1, max_length=10)
    assert [g.update(i, a) for i, a in enumerate([0.1, 0.1, 0.9], 1)] == [1, 1, 1]  # int(1*.1/.9)=0 -> 1


def test_adaptive_defaults_and_state():
    g = AdaptiveGuidance(max_length=3072)
    assert g.length == 3072
    g.update(1, 0.5)
    h = AdaptiveGuidance(max_length=3072)
    h.load_state_dict(g.state_dict())
    assert h.update(2, 0.5) == g.update(2, 0.5) and h.update(3, 1.0) == g.update(3, 1.0) == 1536


def test_linear_decay():
    g = LinearDecayGuidance(10, 4)
    assert [g.update(i, 0.0) for i in range(1, 6)] == [7, 5, 2, 0, 0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="initial_length"):
        AdaptiveGuidance(initial_length=20, max_length=10)
    with pytest.raises(ValueError, match="kind"):
        make_guidance("cosine", None, 10, 3, 10)
