"""Plotting functions of chapters 1–4 on fixed synthetic data: the saved columns are exactly
the numbers drawn, long format, and every figure carries its stamp."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from companion.book.plots import linear as plots  # noqa: E402
from companion.linear.completion import CompletionRun  # noqa: E402

STAMP = "profile=test · device=cpu"


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _lengths(cols):
    return {len(v) for v in cols.values()}


def _stamped(fig):
    return STAMP in [t.get_text() for t in fig.texts]


def test_singular_values_long_format():
    R, L, d = 4, 2, 5
    steps = np.arange(R) * 10
    sv = np.arange(R * L * d, dtype=float).reshape(R, L, d) + 1
    rho = np.ones((R, L)) * 0.5
    in_rho = np.zeros((L, d), bool)
    in_rho[:, 3:] = True
    fig, cols = plots.singular_values(steps, sv, rho, in_rho, STAMP)
    assert _lengths(cols) == {R * L * d} and _stamped(fig)
    np.testing.assert_array_equal(cols["singular_value"], sv.ravel())
    assert cols["in_rho_block"].sum() == R * L * 2 and set(cols["layer"]) == {1, 2}


def test_angles_in_degrees():
    steps, angles = np.arange(3), np.full((3, 4), np.pi / 2)
    in_rho = np.array([False, False, True, True])
    fig, cols = plots.singular_vector_angles(steps, angles, in_rho, 1, STAMP)
    np.testing.assert_allclose(cols["angle_deg"], 90.0)
    assert _lengths(cols) == {12} and _stamped(fig)


def test_rho_comparison_and_counts():
    steps, rho = np.arange(5), np.linspace(1, 0.5, 10).reshape(5, 2)
    fig, cols = plots.rho_comparison(steps, rho, rho * 1.0, np.full((5, 2), 1e-16), STAMP)
    np.testing.assert_array_equal(cols["rho_recursion"], rho.ravel())
    assert _lengths(cols) == {10} and _stamped(fig)
    fig, cols = plots.rho_counts(steps, np.full((5, 2), 7), 7, STAMP)
    assert list(cols["count"]) == [7] * 10 and _stamped(fig)


def test_event_residuals_max_over_layers():
    steps = [np.arange(3), np.arange(2)]
    events = [np.ones((3, 4, 2)) * np.array([1e-16, 2e-16])[None, None, :], np.full((2, 4, 3), 3e-16)]
    fig, cols = plots.event_residuals(steps, events, ["a", "b"], 1e-10, STAMP)
    assert len(cols["case"]) == 4 * 3 + 4 * 2
    np.testing.assert_allclose(cols["max_residual_over_layers"][:3], 2e-16)
    assert set(cols["event"]) == set("ABCD") and _stamped(fig)


def test_subspace_dimensions():
    fig, cols = plots.subspace_dimensions(["x", "y"], [16, 24], [16, 24], STAMP)
    assert cols == {"case": [1, 2], "setting": ["x", "y"], "dim_S": [16, 24], "required": [16, 24]}


def _run(method, n, per_step):
    steps = np.arange(n) * 100
    return CompletionRun(method=method, steps=steps, train_loss=10.0 ** -np.arange(n),
                         recovery_error=10.0 ** -np.arange(n), steps_to_tol=int(steps[-1]), converged=True,
                         wall_time_s=per_step * steps[-1], compile_time_s=0.0, time_per_step_s=per_step)


def test_trajectory_panels_records_and_pcs():
    runs = {"original": _run("original", 4, 1e-3), "compressed": _run("compressed", 3, 1e-4)}
    pcs = {"original": np.zeros((4, 2)), "compressed": np.ones((3, 2))}
    fig, cols = plots.trajectory_panels(runs, pcs, "train_loss", "loss", STAMP)
    assert _lengths(cols) == {4 + 3 + 4 + 3} and _stamped(fig)
    rec = [i for i, k in enumerate(cols["kind"]) if k == "record" and cols["method"][i] == "compressed"]
    np.testing.assert_allclose([cols["wall_time_s"][i] for i in rec], [0.0, 0.01, 0.02])


def test_gap_against_theory_relative_error():
    steps, exact = np.arange(3), np.array([1.0, 0.5, 0.25])
    fig, cols = plots.gap_against_theory(steps, exact * (1 + 1e-9), exact, 4.0, np.ones(3), STAMP)
    np.testing.assert_allclose(cols["relative_error"], 1e-9, rtol=1e-6)
    assert cols["bound_sqrt"] == [2.0] * 3 and _stamped(fig)


def test_rank_sweep_means_and_stds():
    rows = [dict(rank_estimate=r, trial=t, method=m, steps=s + 10 * t, wall_time_s=1.0 + t, converged=1)
            for r in (2, 4) for t in (0, 1) for m, s in (("compressed", 100), ("narrow", 300))]
    fig, cols = plots.rank_sweep(rows, {"narrow": (250, 350)}, STAMP)
    assert cols["method"] == ["compressed"] * 2 + ["narrow"] * 2
    np.testing.assert_allclose(cols["steps_mean"], [105, 105, 305, 305])
    np.testing.assert_allclose(cols["steps_std"], 5.0)
    assert cols["trials"] == [2] * 4 and _stamped(fig)


def test_depth_study_sorted_by_width():
    rows = [dict(depth=L, hidden=h, steps=h * L, converged=1, recovery_error=1e-9 * L) for L in (3, 2) for h in (20, 10)]
    fig, cols = plots.depth_study(rows, STAMP)
    assert cols["depth"] == [3, 3, 2, 2] and cols["hidden"] == [10, 20, 10, 20]
