"""companion.linear.precision: float64 only where the deep-linear code runs, never by an import."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.linear import completion, compression, factorization as F, theory
from companion.linear.precision import float64, x64_enabled

MODULES = ["companion.linear.precision", "companion.linear.factorization", "companion.linear.theory",
           "companion.linear.compression", "companion.linear.completion",
           "companion.book.chapters.ch01_theorem", "companion.book.chapters.ch02_proof",
           "companion.book.chapters.ch03_trajectories", "companion.book.chapters.ch04_completion",
           "companion.cli", "companion.bench.completion"]


def _fresh(code: str) -> dict:
    """Run ``code`` in a clean interpreter and return the JSON it prints last."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", MODULES)
def test_import_leaves_x64_off(module):
    got = _fresh(f"import json, {module}, jax; print(json.dumps(bool(jax.config.jax_enable_x64)))")
    assert got is False


def test_linear_run_then_bert_stays_float32():
    """After a float64 run of the linear half, the adaptation half still sees JAX's float32 mode."""
    code = """
import json, jax, jax.numpy as jnp
from companion.linear import factorization as F
w, phi = F.initial_state(F.FactorizationSetting(width=8, target_rank=2, depth=2, init_scales=(0.5, 0.5),
                                                 lr=0.1, weight_decay=0.0, steps=2))
final, loss = F.run_gd(w, phi, lr=0.1, steps=2)
import companion.adapt.bert
print(json.dumps([str(final.dtype), bool(jax.config.jax_enable_x64), str(jnp.ones(2).dtype)]))
"""
    assert _fresh(code) == ["float64", False, "float32"]


def _problem():
    return completion.make_problem(jax.random.key(0), 12, 2, 0.6)


def _setting():
    return F.FactorizationSetting(width=10, target_rank=2, depth=3, init_scales=(0.5, 0.6, 0.7), lr=0.1,
                                  weight_decay=0.0, steps=4, record_every=2)


def _state():
    return F.initial_state(_setting())


# Entry points that create or train arrays, each called with the global mode switched off.
ENTRY_POINTS = {
    "scaled_orthogonal": lambda: F.scaled_orthogonal(jax.random.key(0), 5, (0.5, 0.7)),
    "haar_orthogonal": lambda: F.haar_orthogonal(jax.random.key(0), 6, 3),
    "low_rank_target": lambda: F.low_rank_target(jax.random.key(0), 6, 2),
    "initial_state": _state,
    "gd_step": lambda: F.gd_step(*_state(), 0.1, 0.01),
    "run_gd": lambda: F.run_gd(*_state(), lr=0.1, steps=4, record_every=2),
    "rho_trajectory": lambda: theory.rho_trajectory((0.5, 0.7), 0.1, 0.0, 5),
    "invariant_subspace": lambda: theory.invariant_subspace(*_state()),
    "proof_vectors": lambda: theory.proof_vectors(*_state()),
    "event_residuals": lambda: theory.event_residuals(*_state(), theory.proof_vectors(*_state()),
                                                      jnp.asarray(_setting().init_scales)),
    "check_theorem": lambda: theory.check_theorem(_setting(), angles=True).singular_values,
    "compress_factorization": lambda: compression.compress_factorization(*_state(), (0.5, 0.6, 0.7), 2),
    "track_gap": lambda: compression.track_gap(*_state(), compression.compress_factorization(*_state(), (0.5, 0.6, 0.7), 2),
                                               lr=0.1, steps=4, record_every=2),
    "gap_against_theory": lambda: compression.gap_against_theory(
        *_state(), compression.compress_factorization(*_state(), (0.5, 0.6, 0.7), 2), (0.5, 0.6, 0.7),
        lr=0.1, steps=4, record_every=2).gap,
    "make_problem": lambda: _problem().target,
    "init_original": lambda: completion.init_original(jax.random.key(1), 12, 3, 0.1),
    "init_narrow": lambda: completion.init_narrow(jax.random.key(1), 12, 3, 0.1, 4),
    "init_compressed": lambda: completion.init_compressed(completion.init_original(jax.random.key(1), 12, 3, 0.1),
                                                          _problem(), 0.1, 2),
    "run_method": lambda: completion.run_method("compressed", _problem(), depth=3, init_scale=0.1, lr=10.0,
                                                rank_estimate=2, budget=20, tol=0.0, record_every=10).train_loss,
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_returns_float64_whatever_the_global_mode(name):
    with jax.enable_x64(False):
        assert not x64_enabled()
        out = ENTRY_POINTS[name]()
        assert not x64_enabled()  # restored after the call
    leaves = [a for a in jax.tree.leaves(out) if hasattr(a, "dtype") and np.issubdtype(a.dtype, np.floating)]
    assert leaves and all(a.dtype == np.float64 for a in leaves), [a.dtype for a in leaves]


def test_float64_is_a_decorator_and_a_context():
    with jax.enable_x64(False):
        with float64():
            assert x64_enabled() and jnp.ones(1).dtype == jnp.float64
        assert not x64_enabled()
        wrapped = float64(lambda: jnp.zeros(2).dtype)
        assert wrapped() == jnp.float64 and not x64_enabled()
