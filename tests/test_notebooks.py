"""The notebooks: stored stripped with one parameters cell, executed with papermill at smoke,
and their metrics and figure CSVs compared with the reviewed baselines."""

import json

import nbformat
import papermill
import pytest

from companion.book import regression as baselines, notebooks as runner
from conftest import ROOT


@pytest.mark.parametrize("name", runner.NOTEBOOKS)
def test_notebook_is_stripped_with_one_parameters_cell(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit it stripped"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = runner.check_parameters(ROOT / "notebooks" / f"{name}.ipynb")
    assert params["profile"]["default"] == '"smoke"'
    assert params["results_dir"]["default"] == '"results"'
    # First cell: installs the package on Colab only.
    assert "google.colab" in code[0].source and "pip install" in code[0].source
    # The README has a Colab badge for it.
    assert f"colab.research.google.com/github/compressible-dynamics/companion/blob/main/notebooks/{name}.ipynb" in (ROOT / "README.md").read_text()


def test_check_parameters_refuses_unparseable_cell(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    cell = nbformat.v4.new_code_cell('profile = "smoke"  # a, b = c\nresults_dir = "results"\nforce = False')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['profile'\]"):
        runner.check_parameters(path)


@pytest.mark.parametrize("name", runner.NOTEBOOKS)
def test_smoke_notebook_matches_baseline(smoke_executions, name):
    run = smoke_executions[name]
    problems = baselines.compare(run.results, ROOT / "baselines" / "smoke" / name)
    assert not problems, "smoke results differ from baselines/smoke (review, then `make baselines`):\n" + "\n".join(problems)


@pytest.mark.parametrize("name", runner.NOTEBOOKS)
def test_smoke_outputs_complete(smoke_executions, name):
    run = smoke_executions[name]
    prov = json.loads((run.results / "provenance.json").read_text())
    assert prov["profile"] == "smoke" and prov["device"].startswith("cpu")
    assert set(prov) >= {"git_revision", "packages", "wall_time_s", "figures"}
    for fig in prov["figures"]:
        assert (run.results / f"{fig}.png").stat().st_size > 1000
        assert (run.results / f"{fig}.csv").exists()
    metrics = json.loads((run.results / "metrics.json").read_text())
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # flat
    assert (run.results / "config.json").exists()
    executed = nbformat.read(run.executed, as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")


def test_smoke_claims_compression(smoke_executions):
    """Chapters 3–4's claims, read back from the smoke metrics (PAPER.md §2–3)."""
    t = json.loads((smoke_executions["03_compressed_trajectories"].results / "metrics.json").read_text())
    assert t["steps_original"] == t["steps_compressed"]
    assert t["max_gap_over_bound"] <= 1 + 1e-6 and t["max_rel_err_vs_exact"] < 1e-4
    c = json.loads((smoke_executions["04_matrix_completion"].results / "metrics.json").read_text())
    assert c["steps_compressed"] <= 1.5 * c["steps_original"]
    assert c["converged_compressed_gamma0"] == 0 and c["recovery_compressed_gamma0"] > 1e-4
    assert c["sweep_mean_steps_compressed"] < c["sweep_mean_steps_narrow"]


def test_smoke_claims(smoke_executions):
    """The theorem's claims, read back from the smoke metrics (margins as in the notebooks)."""
    m = json.loads((smoke_executions["01_theorem"].results / "metrics.json").read_text())
    assert m["required_count"] == 24 and m["min_count"] == 24 and m["max_count_after_step0"] == 24
    assert m["max_rel_dev"] < 1e-10 and m["events_max_residual"] < 1e-10
    assert m["max_angle_rho_block_deg"] < 1e-8 and m["min_final_angle_learning_deg"] > 1
    p = json.loads((smoke_executions["02_proof_verification"].results / "metrics.json").read_text())
    assert p["events_max_residual"] < 1e-10
    for i in range(1, p["cases"] + 1):
        assert p[f"case{i}_dim_s"] >= p[f"case{i}_required_count"]


def test_smoke_claims_deep_lora(smoke_executions):
    """Chapters 5–7 at toy size: what holds even there, read back from the smoke metrics."""
    f1 = json.loads((smoke_executions["05_invariant_subspaces_bert"].results / "metrics.json").read_text())
    for side in ("left", "right"):  # the top-8 subspaces move towards their final position early
        assert f1[f"median_cos_{side}_at_quarter"] > f1[f"median_cos_{side}_at_start"] + 0.2
    assert f1["loss_last_tenth"] < f1["loss_first_tenth"]
    few = json.loads((smoke_executions["06_fewshot_stsb"].results / "metrics.json").read_text())
    assert few["mean_rank_vanilla"] == 8 and few["mean_rank_deep"] < 2  # Deep LoRA's updates: low numerical rank
    glue = json.loads((smoke_executions["07_glue_limited_data"].results / "metrics.json").read_text())
    # Offline data: CoLA, MRPC, RTE, SST-2, STS-B run; MNLI, QNLI, QQP listed as absent.
    assert glue["tasks_run"] == 5 and glue["tasks_absent"] == 3 and glue["seeds"] == 2


@pytest.mark.parametrize("names,limit_s", [
    (("01_theorem", "02_proof_verification"), 120),  # issue 2: under 2 minutes
    (("03_compressed_trajectories", "04_matrix_completion"), 180),  # issue 3: under 3 minutes
    (("05_invariant_subspaces_bert", "06_fewshot_stsb", "07_glue_limited_data"), 360),  # issue 5: under 6 minutes
])
def test_smoke_is_fast(smoke_executions, names, limit_s):
    """Smoke notebooks stay quick on the 2-core CPU (kernel start and compilation included)."""
    total = sum(smoke_executions[n].wall_time_s for n in names)
    assert total < limit_s, f"{names} took {total:.0f} s"


def test_full_profile_stops_at_once_without_gpu(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="needs a GPU"):
        runner.execute("01_theorem", "full", root=ROOT, results_dir=tmp_path,
                       executed_dir=tmp_path, timeout_s=60)


def test_failing_notebook_fails_the_run(tmp_path):
    """A failing cell surfaces as an exception (so `make book`/`make test` fail with it)."""
    with pytest.raises(papermill.PapermillExecutionError):
        papermill.execute_notebook(
            str(ROOT / "notebooks" / "02_proof_verification.ipynb"), str(tmp_path / "out.ipynb"),
            parameters={"profile": "nonsense", "results_dir": str(tmp_path)},
            kernel_name="python3", execution_timeout=60, progress_bar=False,
        )


def test_runner_passes_online_from_the_environment(monkeypatch, tmp_path):
    """COMPANION_ONLINE=1 reaches the `online` parameter of chapters 5-7 (the GPU workflow's
    way to fine-tune bert-base-cased); notebooks without that parameter do not get it."""
    captured = {}

    def fake_execute(source, target, parameters, **kwargs):
        captured.update(parameters)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv("COMPANION_ONLINE", "1")
    runner.execute("06_fewshot_stsb", "smoke", root=ROOT, results_dir=tmp_path, executed_dir=tmp_path)
    assert captured["online"] is True and captured["profile"] == "smoke"
    monkeypatch.setenv("COMPANION_ONLINE", "0")
    runner.execute("06_fewshot_stsb", "smoke", root=ROOT, results_dir=tmp_path, executed_dir=tmp_path)
    assert captured["online"] is False
    captured.clear()
    runner.execute("01_theorem", "smoke", root=ROOT, results_dir=tmp_path, executed_dir=tmp_path)
    assert "online" not in captured
