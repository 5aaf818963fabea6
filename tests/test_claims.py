"""companion.book.claims: claims as data, verified all at once."""

import numpy as np
import pytest

from companion.book import claims


def test_verify_returns_claims_that_hold():
    out = claims.verify([claims.claim("a", True), claims.claim("b", np.float64(1.0) > 0.5, "1.0 > 0.5")])
    assert [c.statement for c in out] == ["a", "b"] and all(type(c.holds) is bool for c in out)
    assert str(out[1]) == "[holds] b (1.0 > 0.5)"


def test_verify_names_every_failure():
    with pytest.raises(claims.ClaimsFailed, match=r"2 of 3 claims do not hold:\n\[FAILS\] x \(1 < 0\)\n\[FAILS\] z"):
        claims.verify([claims.claim("x", False, "1 < 0"), claims.claim("y", True), claims.claim("z", False)])
    assert issubclass(claims.ClaimsFailed, AssertionError)  # a failing notebook cell, as an assert would


def test_require_refuses_missing_metrics():
    claims.require({"a": 1}, "a")
    with pytest.raises(KeyError, match=r"\['b'\]"):
        claims.require({"a": 1}, "a", "b")


@pytest.mark.parametrize("value,spread,text", [(0.598, 0.103, "0.598 ± 0.103"), (0.888, None, "0.888"),
                                                ("≈ 10×", None, "≈ 10×")])
def test_paper_value_text(value, spread, text):
    assert claims.PaperValue(value, "arXiv:2406.04112", spread).text() == text
