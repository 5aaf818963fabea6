"""The book builds from the executed smoke notebooks with Sphinx warnings as errors."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_book_builds_without_warnings(smoke_executions, tmp_path):
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--warningiserror", "--keep-going", "--path-output", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = tmp_path / "_build" / "html"
    for page in ("book/executed/01_theorem.html", "book/executed/02_proof_verification.html",
                 "book/intro.html", "book/references.html"):
        assert (html / page).exists(), page
    chapter = (html / "book/executed/01_theorem.html").read_text()
    assert "# Parameters" not in chapter  # one parameters cell: papermill's injected copy is hidden
    assert chapter.count("<img") >= 4  # the four figures, rendered from executed outputs
    for name in ("01_theorem", "03_compressed_trajectories", "04_matrix_completion",
                 "05_invariant_subspaces_bert", "06_fewshot_stsb", "07_glue_limited_data"):
        page = (html / f"book/executed/{name}.html").read_text()
        # The paper-vs-ours table is rendered as a table (a header cell), not as pipes in a paragraph.
        assert re.search(r'<th class="head"><p>paper[^<]*arXiv:2406\.04112', page), name
    # Chapters 5-7 draw their figures and name their backbone, with the caveat.
    for name, figures in (("05_invariant_subspaces_bert", 1), ("06_fewshot_stsb", 4), ("07_glue_limited_data", 1)):
        page = (html / f"book/executed/{name}.html").read_text()
        assert page.count("<img") >= figures and "sentence-embedding model" in page, name
        assert "not a result" in page, name  # smoke fine-tuning is labelled a code check
    # The report chapter: its claims table and its two figures, drawn from the records.
    page = (html / "book/executed/08_reproduction_report.html").read_text()
    assert re.search(r'<th class="head"><p>claim</p></th>\s*<th class="head"><p>paper</p></th>', page)
    assert page.count("<img") >= 2 and "not reproduced" in page and "sentence-embedding model" in page
    # Every chapter's Colab launch button opens the notebook of the repository, not the executed copy.
    for name in ("01_theorem", "02_proof_verification", "03_compressed_trajectories", "04_matrix_completion",
                 "05_invariant_subspaces_bert", "06_fewshot_stsb", "07_glue_limited_data", "08_reproduction_report"):
        page = (html / f"book/executed/{name}.html").read_text()
        colab = "https://colab.research.google.com/github/compressible-dynamics/companion/blob/main/"
        assert f"{colab}notebooks/{name}.ipynb" in page, name
        assert f"{colab}book/executed/" not in page, name
