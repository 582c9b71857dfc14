"""Field rules are written twice (CEL for the API server, Python for pydantic): they must agree."""

from __future__ import annotations

import cel
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.api.common import DURATION_RULE, GLOB_MAX, GLOB_RULE

GLOB_CEL = cel.compile(GLOB_RULE.rule)
DURATION_CEL = cel.compile(DURATION_RULE.rule)

SPECIAL = "\u2028\u0085\u00a0\x1c \t\n[]{}\u200b\u00ad\x00\x7f\uff41\u00e9\u3000\U0001f600"
tricky_text = st.text(st.sampled_from(list("ab*?_-./:" + SPECIAL)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(tricky_text)
def test_glob_rule_agrees(pattern: str) -> None:
    in_bounds = 0 < len(pattern) <= GLOB_MAX
    cel_ok = in_bounds and GLOB_CEL.execute({"self": pattern}) is True
    assert GLOB_RULE.check(pattern) == cel_ok


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=-10, max_value=10**6),
        st.from_regex(r"\A([0-9]{0,3}[hms]){0,3}\Z"),
        st.text("0123456789hms ", max_size=8),
    )
)
def test_duration_rule_agrees(value: int | str) -> None:
    assert DURATION_RULE.check(value) == (DURATION_CEL.execute({"self": value}) is True)
