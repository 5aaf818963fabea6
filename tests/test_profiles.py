"""companion.book.profiles: profile names, the GPU guard, overrides."""

import pytest

from companion.book import profiles
from companion.book.chapters import ch01_theorem


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


@pytest.mark.parametrize("name,ok", [("smoke", True), ("full", True), ("Smoke", False), ("medium", False)])
def test_profile_names(name, ok):
    if ok:
        assert profiles.check_profile_name(name) == name
    else:
        with pytest.raises(ValueError, match="choose one of smoke, full"):
            profiles.check_profile_name(name)


def test_with_overrides():
    s = ch01_theorem.config("smoke").setting
    assert profiles.with_overrides(s, steps=None) == s
    assert profiles.with_overrides(s, steps=10).steps == 10
    with pytest.raises(ValueError, match="unknown setting"):
        profiles.with_overrides(s, stepz=10)
    with pytest.raises(ValueError, match="d > 2r"):
        profiles.with_overrides(s, width=6)
