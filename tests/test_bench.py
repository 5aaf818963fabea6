"""companion.bench.completion: the step-size rule and the timing entry points (numbers recorded,
not asserted: wall-clock limits are recorded, never tested)."""

import pytest

from companion.bench import completion as bench


@pytest.mark.parametrize("width,fraction,expected", [
    (1000, 0.2, 5e3),  # the paper's setting
    (1000, 0.4, 2.5e3),  # η ∝ 1/p
    (125, 0.2, 5e3 / 16),  # η ∝ d^{4/3}: (1/8)^{4/3} = 1/16
])
def test_lr_for_scales_the_papers_step(width, fraction, expected):
    assert bench.lr_for(width, fraction) == pytest.approx(expected, rel=1e-12)


def test_per_step_times_both_methods_and_the_other_layout():
    out = bench.per_step(width=30, target_rank=2, fraction=0.5, steps_original=2, steps_compressed=4)
    assert (out["layout"], out["other_layout"]) == ("dense", "sparse")
    assert all(out[k] > 0 for k in ("original", "compressed", "other_layout_s"))


def test_flop_and_byte_models():
    # L = 3: 2 products forward, 4 backward, 2d³ each; the dense compressed step's 57 d² bytes
    # (f written, f, Φ, Ω read, R written, R read three times) and the 9 d² of Φ and Ω alone.
    assert bench.original_flops(1000, 3) == 12e9
    assert bench.original_flops(10, 2) == 3 * 2e3
    assert bench.compressed_bytes(1000) == {"program": 57e6, "fused": 9e6}


def test_machine_rates_are_positive_and_finite():
    rates = bench.machine_rates(width=64, stream_mib=8, repeats=2)
    assert set(rates) == {"dgemm_gflop_s", "read_gb_s"}
    assert all(0 < v < 1e5 for v in rates.values())


def test_time_to_error_reports_steps_and_seconds():
    out = bench.time_to_error(width=30, target_rank=2, fraction=0.6, target_error=1e-4, budget=20_000,
                              record_every=100)
    for method in ("original", "compressed"):
        assert out[method]["steps"] % 100 == 0 and out[method]["seconds"] >= 0


def test_time_to_error_says_when_the_budget_is_too_small():
    with pytest.raises(RuntimeError, match="did not reach recovery error"):
        bench.time_to_error(width=30, target_rank=2, fraction=0.6, target_error=1e-30, budget=100, record_every=100)


# ---- companion.bench.lora: bucketed padding (numbers recorded, never asserted) -----------------


def test_padding_benchmark_is_a_bench_choice():
    from companion import cli

    assert cli._build_parser().parse_args(["bench", "padding"]).what == "padding"


def test_run_padding_reports_the_ratio_of_whole_runs(monkeypatch):
    from companion.bench import lora

    fake = {("padding-step", "3"): {"step_time_bucketed_over_fixed": 0.4},
            ("run", "jax", "7"): {"framework": "jax", "wall_time_s": 30.0},
            ("run", "pytorch+peft", "7"): {"framework": "pytorch+peft", "wall_time_s": 60.0}}
    monkeypatch.setattr(lora, "_subprocess", lambda *args: fake[args])
    out = lora.run_padding(steps=7, repeats=3)
    assert out["run_wall_time_jax_over_peft"] == 0.5 and out["step"] == fake[("padding-step", "3")]
    assert "7 steps" in out["run_setting"]
    monkeypatch.setattr(lora, "_subprocess", lambda *args: {"error": "boom"} if args[0] == "run" else {})
    assert lora.run_padding(steps=7, repeats=3)["run_wall_time_jax_over_peft"] is None


def test_embedding_benchmark_is_a_bench_choice_and_runs_both_adapters(monkeypatch):
    from companion import cli
    from companion.bench import lora

    assert cli._build_parser().parse_args(["bench", "embedding"]).what == "embedding"
    calls = []
    monkeypatch.setattr(lora, "_subprocess", lambda *args: calls.append(args) or {"method": args[1]})
    out = lora.run_embedding(repeats=4)
    assert calls == [("embedding-step", "deep-lora", "4"), ("embedding-step", "lora", "4")]
    assert [r["method"] for r in out["results"]] == ["deep-lora", "lora"] and out["cpu_cores"] >= 1
