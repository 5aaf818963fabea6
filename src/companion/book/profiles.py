"""Profiles ("smoke" on a CPU, "full" at paper scale on a GPU) and the device they run on."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

PROFILES = ("smoke", "full")
FORCE_ENV = "COMPANION_FORCE_FULL"


def device_description() -> str:
    """A short description of JAX's default device, e.g. 'cpu (2 cores)' or 'gpu: NVIDIA H100'."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    return f"{dev.platform}: {getattr(dev, 'device_kind', 'unknown')}"


def has_accelerator() -> bool:
    """True when JAX's default backend is a GPU or TPU."""
    import jax

    return jax.default_backend() in ("gpu", "cuda", "rocm", "tpu")


def check_profile_name(profile: str) -> str:
    """The profile name, if it is one of PROFILES (the one place the name is checked).

    Raises:
      ValueError: unknown profile; the message lists the known ones.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def with_overrides(config: Any, **overrides: Any) -> Any:
    """``dataclasses.replace`` that ignores ``None`` (a notebook parameter left unset).

    Raises:
      ValueError: a name that is not a field of the config.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(config)}
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for {type(config).__name__}")
    return dataclasses.replace(config, **given)


def check_profile(profile: str, force: bool = False) -> str:
    """Validate a profile name and refuse ``full`` on a machine without an accelerator.

    Args:
      profile: "smoke" or "full".
      force: run ``full`` on a CPU anyway (also set by the environment variable
        COMPANION_FORCE_FULL=1).

    Returns:
      the profile name.

    Raises:
      ValueError: unknown profile.
      RuntimeError: ``full`` without a GPU and without force; the message says what to do.
    """
    check_profile_name(profile)
    forced = force or os.environ.get(FORCE_ENV, "") not in ("", "0")
    if profile == "full" and not forced and not has_accelerator():
        raise RuntimeError(
            "profile='full' runs the paper-scale experiments and needs a GPU, but JAX sees only "
            f"{device_description()}. Use profile='smoke' here, run on a GPU machine or Colab, "
            f"or force it with force=True (or {FORCE_ENV}=1) if you accept hours on a CPU."
        )
    return profile
