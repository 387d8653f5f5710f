import math

import pytest

from s2lpo.eval.passk import mean_pass_at_k, pass_at_k


def exact(n, c, k):
    return 1 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(("n", "c", "k", "value"), [
    (10, 3, 1, 0.3), (5, 2, 2, 0.7), (4, 1, 2, 0.5), (16, 0, 4, 0.0), (16, 16, 1, 1.0), (8, 6, 3, 1.0),
    (64, 1, 64, 1.0), (3, 1, 3, 1.0),
])
def test_known_values(n, c, k, value):
    assert pass_at_k(n, c, k) == pytest.approx(value, abs=1e-12)


def test_matches_binomial_formula():
    for n in (1, 2, 7, 16, 33):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(exact(n, c, k), abs=1e-12)


def test_large_n_is_stable():
    # C(2000, 1000) overflows floats; the product form does not
    assert pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)
    assert pass_at_k(2000, 3, 1000) == pytest.approx(1 - (1000 * 999 * 998) / (2000 * 1999 * 1998))


def test_errors():
    with pytest.raises(ValueError, match="k=5 > n=4"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="c=5"):
        pass_at_k(4, 5, 1)


def test_mean_pass():
    assert mean_pass_at_k([4, 4], [1, 0], 1) == 0.125
