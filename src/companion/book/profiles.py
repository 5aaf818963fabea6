"""Profiles ("smoke" on a CPU, "full" at paper scale on a GPU) and the device they run on."""

from __future__ import annotations

import os

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
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    forced = force or os.environ.get(FORCE_ENV, "") not in ("", "0")
    if profile == "full" and not forced and not has_accelerator():
        raise RuntimeError(
            "profile='full' runs the paper-scale experiments and needs a GPU, but JAX sees only "
            f"{device_description()}. Use profile='smoke' here, run on a GPU machine or Colab, "
            f"or force it with force=True (or {FORCE_ENV}=1) if you accept hours on a CPU."
        )
    return profile
