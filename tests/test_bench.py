"""companion.bench.completion: the step-size rule and the timing entry points (numbers recorded,
not asserted: wall-clock limits are recorded, never tested)."""

import pytest

from companion.bench import completion as bench
from companion.linear import completion


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


def test_dense_step_passes_time_the_steps_three_operations():
    problem = completion.make_problem(completion.problem_key(0), 40, 2, 0.5)
    out = bench.dense_step_passes(problem, 2, repeats=2)
    assert set(out) == {"residual_s", "rv_s", "rtx_s", "sum_s"}
    assert all(0 < out[k] < 1 for k in ("residual_s", "rv_s", "rtx_s"))
    assert out["sum_s"] == pytest.approx(out["residual_s"] + out["rv_s"] + out["rtx_s"])


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


# ---- companion.bench.profile: time by kind of operation ---------------------------------------

_HLO = """HloModule m

%fused_computation.1 (p0: u32[8], p1: u32[8]) -> u32[8] {
  %p0 = u32[8]{0} parameter(0)
  %p1 = u32[8]{0} parameter(1)
  %xor.1 = u32[8]{0} xor(%p0, %p1)
  ROOT %shift-right-logical.1 = u32[8]{0} shift-right-logical(%xor.1, %p1)
}

%fused_computation.2 (p0: f32[8]) -> f32[8] {
  %p0 = f32[8]{0} parameter(0)
  ROOT %exponential.1 = f32[8]{0} exponential(%p0)
}

ENTRY %main (a: f32[8,8], b: u32[8]) -> f32[8,8] {
  %a = f32[8,8]{1,0} parameter(0)
  %b = u32[8]{0} parameter(1)
  %dot.1 = f32[8,8]{1,0} dot(%a, %a), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %ynn_fusion.3 = f32[8,8]{1,0} fusion(%a, %a), kind=kCustom, calls=%fused_computation.2
  %bits_fusion = u32[8]{0} fusion(%b, %b), kind=kLoop, calls=%fused_computation.1
  %exp_fusion = f32[8]{0} fusion(%b), kind=kLoop, calls=%fused_computation.2
  %copy.1 = f32[8,8]{0,1} copy(%a)
  ROOT %add.1 = f32[8,8]{1,0} add(%a, %a), metadata={op_name="jit(f)/jit(_uniform)/add"}
}
"""


def test_categorize_reads_fusions_their_operations_and_op_names():
    from companion.bench import profile

    names = profile.categorize(_HLO)
    assert names["dot.1"] == names["ynn_fusion.3"] == "dense products"
    assert names["bits_fusion"] == "dropout random bits"  # Threefry's xor and shifts inside
    assert names["exp_fusion"] == "softmax exp"
    assert names["copy.1"] == "copies and transposes"
    assert names["add.1"] == "dropout random bits"  # from jax.random, by its op_name
    assert set(names.values()) <= set(profile.CATEGORIES)


def test_profile_splits_a_real_program_by_category():
    import jax
    import jax.numpy as jnp

    from companion.bench import profile

    @jax.jit
    def f(a, key):
        keep = jax.random.bernoulli(key, 0.9, (512, 512))
        return jnp.where(keep, a @ a, 0.0)

    a = jnp.ones((512, 512), jnp.float32)
    out = profile.profile(f, a, jax.random.key(0), steps=2)
    shares = {c: v["share"] for c, v in out["by_category"].items()}
    assert "dense products" in shares and "dropout random bits" in shares
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert out["op_s_per_step"] > 0 and out["wall_s_per_step"] > 0 and out["threads"] >= 1
    assert out["top"][0]["s_per_step"] >= out["top"][-1]["s_per_step"]


def test_lora_benchmark_prints_the_profile_beside_the_ratios(monkeypatch):
    import json as _json
    import subprocess as _sp

    from companion.bench import lora

    class Done:
        returncode, stderr = 0, ""

        def __init__(self, fw, setup):
            self.stdout = _json.dumps({"framework": fw, "setup": setup, "step_time_s": 2.0 if fw == "jax" else 1.6,
                                       "peak_rss_mb": 100.0})

    monkeypatch.setattr(_sp, "run", lambda args, **kw: Done(args[4], args[5]))
    monkeypatch.setattr(lora, "_subprocess", lambda *args: {"setup": args[1], "by_category": {}})
    out = lora.run(setups=("lora-query-value",))
    assert out["ratios"]["lora-query-value"]["step_time_jax_over_peft"] == pytest.approx(1.25)
    assert out["jax_profiles"] == {"lora-query-value": {"setup": "lora-query-value", "by_category": {}}}
