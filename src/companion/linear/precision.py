"""Double precision for the deep-linear half, switched on only where its code runs.

The theorem of arXiv:2406.04112 (the invariant-subspace theorem) states *exact* equalities:
d − 2r* singular values of every layer equal ρ_l(t). Checking them to 1e-10 needs float64,
whereas the adaptation half (BERT, LoRA) runs in float32. JAX's x64 mode is a global flag, so
instead of switching it on at import (which would silently change the dtypes of every other
module), every public entry point of ``companion.linear`` runs inside ``float64``: a decorator
that enters ``jax.enable_x64(True)`` for the duration of the call and restores the previous
mode afterwards. Arrays created inside keep their float64 dtype after the call returns.

Usage::

    @float64
    def run_gd(...): ...        # always float64, whatever the global mode

    with float64():             # a block of linear-algebra code, e.g. a chapter's run()
        ...
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, TypeVar, overload

import jax

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def _x64() -> Iterator[None]:
    with jax.enable_x64(True):
        yield


@overload
def float64(fn: F) -> F: ...


@overload
def float64(fn: None = None) -> contextlib.AbstractContextManager[None]: ...


def float64(fn: Callable[..., Any] | None = None) -> Any:
    """Run ``fn`` (as a decorator) or a ``with`` block (called without arguments) in float64.

    Nested uses are free: inside an x64 block, entering another is a no-op. Entering it while
    JAX traces a function (e.g. a decorated helper called inside ``lax.scan``) is also fine,
    since the traced caller is itself decorated and already runs in x64 mode.

    Args:
      fn: the function to wrap; None to get a context manager.

    Returns:
      the wrapped function (same signature and docstring), or a context manager.
    """
    if fn is None:
        return _x64()

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    return wrapper


def x64_enabled() -> bool:
    """Whether JAX's x64 mode is on right now (globally or inside a ``float64`` block)."""
    return bool(jax.config.jax_enable_x64)
