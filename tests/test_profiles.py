"""companion.book.profiles and configs: profile names, the GPU guard, overrides."""

import pytest

from companion.book import configs, profiles


def test_full_without_gpu_refuses_unless_forced(monkeypatch):
    monkeypatch.delenv(profiles.FORCE_ENV, raising=False)
    assert profiles.check_profile("smoke") == "smoke"
    with pytest.raises(RuntimeError, match="needs a GPU"):
        profiles.check_profile("full")
    assert profiles.check_profile("full", force=True) == "full"
    monkeypatch.setenv(profiles.FORCE_ENV, "1")
    assert profiles.check_profile("full") == "full"
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profiles.check_profile("fast")


def test_configs_per_profile():
    smoke = configs.TheoremConfig.for_profile("smoke").setting
    assert (smoke.width, smoke.rank, smoke.depth) == (30, 3, 3)  # the talk's setting
    full = configs.TheoremConfig.for_profile("full").setting
    assert (full.width, full.rank, full.depth) == (300, 5, 4) and full.weight_decay > 0
    cases = configs.ProofConfig.for_profile("smoke").cases
    assert {c.depth for c in cases} >= {2, 3, 4, 5}
    assert any(len(set(c.scales)) > 1 for c in cases)


def test_with_overrides():
    s = configs.TheoremConfig.for_profile("smoke").setting
    assert configs.with_overrides(s, steps=None) == s
    assert configs.with_overrides(s, steps=10).steps == 10
    with pytest.raises(ValueError, match="unknown setting"):
        configs.with_overrides(s, stepz=10)
    with pytest.raises(ValueError, match="d > 2r"):
        configs.with_overrides(s, width=6)
