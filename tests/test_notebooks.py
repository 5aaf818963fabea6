"""The notebooks: stored stripped with one parameters cell, executed with papermill at smoke,
and their metrics and figure CSVs compared with the reviewed baselines."""

import importlib
import json
import shutil

import nbformat
import papermill
import pytest

from companion.book import notebooks as runner, regression
from companion.book.chapters import CHAPTERS
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


BASELINED = [n for n in runner.NOTEBOOKS if regression.has_baseline(n)]


def test_only_the_report_goes_without_a_baseline():
    assert [n for n in runner.NOTEBOOKS if n not in BASELINED] == ["08_reproduction_report"]
    assert not (ROOT / "baselines" / "smoke" / "08_reproduction_report").exists()


@pytest.mark.parametrize("name", BASELINED)
def test_smoke_notebook_matches_baseline(smoke_executions, name):
    """Smoke results against baselines/smoke, at the chapter's precision's tolerance (tight for
    float64; for float32 tight on the baseline's platform, looser elsewhere: book.regression)."""
    run = smoke_executions[name]
    chapter = importlib.import_module(f"companion.book.chapters.{CHAPTERS[name]}")
    baseline = ROOT / "baselines" / "smoke" / name
    problems = regression.compare(run.results, baseline, **regression.tolerance(chapter.PRECISION, baseline),
                                  column_atol=getattr(chapter, "ROUNDING_LIMITED", None))
    assert not problems, "smoke results differ from baselines/smoke (review, then `make baselines`):\n" + "\n".join(problems)


@pytest.mark.parametrize("name", runner.NOTEBOOKS)
def test_smoke_outputs_complete(smoke_executions, name):
    run = smoke_executions[name]
    prov = json.loads((run.results / "provenance.json").read_text())
    assert prov["profile"] == "smoke" and prov["device"].startswith("cpu")
    assert set(prov) >= {"git_revision", "packages", "wall_time_s", "figures"}
    # The kernel compiled at the level chosen for it (companion.book.notebooks.kernel_xla_flags).
    assert prov["xla_flags"] == (runner.kernel_xla_flags(name, "smoke") or "")
    for fig in prov["figures"]:
        assert (run.results / f"{fig}.png").stat().st_size > 1000
        assert (run.results / f"{fig}.csv").exists()
    metrics = json.loads((run.results / "metrics.json").read_text())
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # flat
    assert (run.results / "config.json").exists()
    executed = nbformat.read(run.executed, as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    # papermill's injected parameters stay in the executed notebook, hidden from the book's page.
    (injected,) = [c for c in executed.cells if runner.INJECTED_TAG in c.metadata.get("tags", [])]
    assert runner.HIDDEN_TAG in injected.metadata["tags"] and 'profile = "smoke"' in injected.source


@pytest.mark.parametrize("name", runner.NOTEBOOKS)
def test_smoke_claims(smoke_executions, name):
    """Each chapter's claims, read back from its smoke metrics by the chapter's own
    check_claims (the function the notebook's last cell calls: one copy of each claim)."""
    chapter = importlib.import_module(f"companion.book.chapters.{CHAPTERS[name]}")
    metrics = json.loads((smoke_executions[name].results / "metrics.json").read_text())
    assert all(c.holds for c in chapter.check_claims(metrics, "smoke"))


def test_smoke_glue_runs_the_offline_tasks(smoke_executions):
    """Offline data: CoLA, MRPC, RTE, SST-2, STS-B run; MNLI, QNLI, QQP listed as absent."""
    glue = json.loads((smoke_executions["07_glue_limited_data"].results / "metrics.json").read_text())
    assert glue["tasks_run"] == 5 and glue["tasks_absent"] == 3 and glue["seeds"] == 2


def test_report_chapter_reads_the_records_and_every_chapter(smoke_executions):
    """Chapter 8's numbers are the committed records' (recomputed here from the files) and it read
    the checks of all seven chapters executed before it in the same run."""
    from companion.book import report, studies

    metrics = json.loads((smoke_executions["08_reproduction_report"].results / "metrics.json").read_text())
    records = studies.find_records(ROOT / "reports")
    assert metrics["records"] == len(records) > 0
    assert metrics["chapters_absent"] == 0 and metrics["chapter_claims"] == metrics["chapter_claims_holding"] >= 30
    raw = {}
    for path in (ROOT / "reports").rglob("*.json"):
        data = json.loads(path.read_text())
        # The few-shot curve's 500-step runs only: the rank sweep and the comparison store n = 16 runs
        # of 200 steps under the same method and seed.
        if "result" in data and data["config"]["task"] == "stsb" and data["config"]["steps"] == 500 \
                and data["result"]["fitted"]:
            raw[(data["config"]["adapter"]["method"], data["config"]["samples"], data["seed"])] = data["result"]["value"]
    pairs = [raw[("deep-lora-compressed", 16, s)] - raw[("lora", 16, s)] for s in range(20)
             if ("deep-lora-compressed", 16, s) in raw and ("lora", 16, s) in raw]
    assert metrics["fewshot_compressed_n16_pairs"] == len(pairs) >= 3
    assert metrics["fewshot_compressed_n16_delta_mean"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    judged = [r for r in report.claims(records) if r.seeds != "0"]
    assert metrics["not_reproduced"] == sum(r.verdict == "not reproduced" for r in judged)


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
        shutil.copy(source, target)  # as papermill, leave an executed copy (here: unexecuted)

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


def test_injected_parameters_are_hidden_from_the_book_but_kept(tmp_path):
    """papermill's injected cell gets Jupyter Book's remove-cell tag (once); its values stay."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(x)")]
    nbformat.write(nb, tmp_path / "a.ipynb")
    papermill.execute_notebook(str(tmp_path / "a.ipynb"), str(tmp_path / "b.ipynb"), parameters={"x": 2},
                               kernel_name="python3", progress_bar=False)
    assert runner.hide_injected_parameters(tmp_path / "b.ipynb") == 1
    assert runner.hide_injected_parameters(tmp_path / "b.ipynb") == 0
    cells = nbformat.read(tmp_path / "b.ipynb", as_version=4).cells
    assert [c.metadata.get("tags", []) for c in cells] == [["parameters"], ["injected-parameters", "remove-cell"], []]
    assert "x = 2" in cells[1].source and cells[2].outputs[0]["text"] == "2\n"


@pytest.mark.parametrize("notebook, profile, environ, expected", [
    ("07_glue_limited_data", "smoke", {}, runner.FAST_COMPILE),
    ("07_glue_limited_data", "smoke", {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}, f"--xla_dump_to=/tmp/x {runner.FAST_COMPILE}"),
    ("07_glue_limited_data", "smoke", {"XLA_FLAGS": "--xla_backend_optimization_level=2"}, "--xla_backend_optimization_level=2"),
    ("07_glue_limited_data", "full", {}, None),
    ("05_invariant_subspaces_bert", "smoke", {}, None),
    ("05_invariant_subspaces_bert", "smoke", {"XLA_FLAGS": "--a"}, "--a"),
    # Under the test suite the kernels start from the caller's flags, not the suite's own.
    ("05_invariant_subspaces_bert", "smoke", {"XLA_FLAGS": runner.FAST_COMPILE, runner.KERNEL_XLA_FLAGS_ENV: ""}, None),
    ("01_theorem", "smoke", {"XLA_FLAGS": runner.FAST_COMPILE, runner.KERNEL_XLA_FLAGS_ENV: "--a"}, f"--a {runner.FAST_COMPILE}"),
])
def test_kernel_xla_flags(notebook, profile, environ, expected):
    assert runner.kernel_xla_flags(notebook, profile, environ) == expected


def test_fast_compile_notebooks_are_notebooks():
    assert set(runner.FAST_COMPILE_NOTEBOOKS) < set(runner.NOTEBOOKS)


def test_extra_parameters_must_be_declared(tmp_path):
    """A parameter the notebook does not declare is refused before anything runs (papermill would
    inject it silently and the notebook would ignore it)."""
    with pytest.raises(ValueError, match="declares no parameter \\['pieces_dir'\\]"):
        runner.execute("01_theorem", "smoke", results_dir=tmp_path, executed_dir=tmp_path, extra={"pieces_dir": "x"})
    assert "pieces_dir" in runner.check_parameters(ROOT / "notebooks" / "04_matrix_completion.ipynb")
