"""Property test of validation (Hypothesis): random override sets of our config groups — valid and invalid
values of every field, wrong types, unknown keys — either compose and validate, or fail with one clean error:
Hydra's own (a key its config does not have, without ``+``) or our ConfigError, one line per problem, naming
an overridden field. Never another exception (a traceback for the user), and nothing written."""

from __future__ import annotations

import os

import pytest
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from s2lpo.config.validate import ConfigError, validate
from s2lpo_testing import QUICK, make_cfg

GROUPS = ("algorithm", "data", "trainer", "learner", "explorer", "logger", "family")


def _leaves(tmp) -> dict[str, object]:
    cfg = make_cfg(tmp, *QUICK)
    out = {"seed": cfg.seed}
    for g in GROUPS:
        flat = OmegaConf.to_container(cfg[g], resolve=False)
        if g == "trainer":
            flat.pop("verl", None)
        stack = [(g, flat)]
        while stack:
            prefix, node = stack.pop()
            for k, v in node.items():
                key = f"{prefix}.{k}"
                if isinstance(v, dict):
                    stack.append((key, v))
                elif not isinstance(v, list) and not (isinstance(v, str) and "${" in v):
                    out[key] = v
    return out


FIELDS = _leaves(os.environ.get("TMPDIR", "/tmp"))
WEIRD = st.sampled_from(["abc", "-1", "0", "1e309", "null", "true", "''", "[1,2]", "{a: 1}", "-0.5", "99999999"])


@st.composite
def override(draw):
    key = draw(st.sampled_from(sorted(FIELDS)))
    value = FIELDS[key]
    kind = draw(st.sampled_from(["same_type", "weird", "unknown"]))
    if kind == "unknown":
        group = key.rsplit(".", 1)[0] if "." in key else "algorithm"
        return f"+{group}.{draw(st.sampled_from(['tmix', 'lr_', 'foo', 'groupsize']))}={draw(WEIRD)}", group
    if kind == "weird":
        return f"{key}={draw(WEIRD)}", key
    if isinstance(value, bool):
        v = draw(st.booleans())
    elif isinstance(value, int):
        v = draw(st.integers(-3, 200))
    elif isinstance(value, float):
        v = draw(st.floats(-2, 5, allow_nan=False))
    else:
        v = draw(st.sampled_from(["", "x", "none", str(value)]))
    return f"{key}={str(v).lower() if isinstance(v, bool) else v}", key


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("S2LPO_PROPERTY_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(override(), min_size=1, max_size=4))
def test_random_overrides_validate_or_fail_cleanly(tmp_path, picked):
    overrides = [o for o, _ in picked]
    before = set(tmp_path.rglob("*"))
    try:
        cfg = make_cfg(tmp_path, *QUICK, *overrides)
    except (HydraException, OmegaConfBaseException) as e:  # Hydra's own answer, printed without a traceback
        assert str(e).strip(), overrides
        return
    try:
        validate(cfg)
    except ConfigError as e:
        assert e.problems, overrides
        for line in e.problems:
            assert "\n" not in line and line.strip(), line
        text = str(e)
        assert any(field.split(".")[-1] in text for _, field in picked), (overrides, text)
    assert set(tmp_path.rglob("*")) == before, "validation wrote files"
