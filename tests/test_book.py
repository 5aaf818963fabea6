"""The book builds from the executed smoke notebooks with Sphinx warnings as errors, and its
chapters render in a real (headless) browser: formulas typeset by the book's own MathJax."""

import html as html_module
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from companion.book import notebooks as runner
from conftest import ROOT

INSTALL_LOG, INSTALL_RC = ROOT / ".cache" / "chromium-install.log", ROOT / ".cache" / "chromium-install.rc"
# Headless, offline-safe: no background networking (this machine's closed network refuses it).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=15000")
SCREENSHOTS = ROOT / "_build" / "screenshots"


def find_chromium(wait_s: float = 600.0) -> str | None:
    """Headless Chromium's path; waits for the background install ``make test`` may have started
    (Makefile: BROWSER_INSTALL) to finish, at most ``wait_s``."""
    import time

    deadline = time.monotonic() + wait_s
    while INSTALL_LOG.exists() and not INSTALL_RC.exists() and time.monotonic() < deadline:
        time.sleep(5)
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        tail = INSTALL_LOG.read_text()[-300:] if INSTALL_LOG.exists() else ""
        pytest.skip("no headless Chromium here and none could be installed (Debian: apt-get install chromium)"
                    + (f"; the install said: {tail}" if tail else ""))
    return path


@pytest.fixture(scope="module")
def built_book(smoke_executions, tmp_path_factory):
    """(jupyter-book's process, the html folder) of one build of the executed smoke notebooks."""
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--warningiserror", "--keep-going", "--path-output", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )
    return proc, out / "_build" / "html"


def test_book_builds_without_warnings(built_book):
    proc, html = built_book
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for page in ("book/executed/01_theorem.html", "book/executed/02_proof_verification.html",
                 "book/intro.html", "book/references.html"):
        assert (html / page).exists(), page
    chapter = (html / "book/executed/01_theorem.html").read_text()
    # MathJax is served with the book (a pinned copy in _static), never from a CDN: math renders offline.
    mathjax = html / "_static" / "mathjax" / "tex-svg-full.js"
    assert mathjax.stat().st_size > 1_000_000
    for page in html.rglob("*.html"):
        text = page.read_text()
        assert "cdn.jsdelivr.net" not in text and "mathjax@" not in text, page
    assert '_static/mathjax/tex-svg-full.js' in chapter
    assert chapter.count("const THEBE_JS_URL") == 1  # each page script once (book/_ext/single_scripts)
    assert "_static/wrap-code.css" in chapter  # long code lines wrap instead of scrolling out of sight
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


def render(chromium: str, page: Path, profile_dir: Path, screenshot: Path | None = None) -> tuple[str, str]:
    """(the DOM after the page's scripts ran, Chromium's log) of a page opened in headless Chromium."""
    args = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0"]
    args += [f"--screenshot={screenshot}", "--window-size=1280,2000"] if screenshot else ["--dump-dom"]
    proc = subprocess.run([*args, page.as_uri()], capture_output=True, text=True, timeout=120)
    return proc.stdout, proc.stderr


def math_problems(dom: str) -> list[str]:
    """What a reader would see wrong with the page's math: TeX left raw in the text (``\\(`` or
    ``$$`` outside scripts and styles), or no typeset formula at all."""
    text = re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)
    text = html_module.unescape(re.sub(r"<[^>]+>", "", text))
    problems = [f"raw TeX: ...{text[max(0, i - 30):i + 30]!r}..." for i in
                [m.start() for m in re.finditer(r"\\\(|\$\$", text)][:3]]
    if "<mjx-container" not in dom:
        problems.append("no formula typeset (no mjx-container element)")
    return problems


def console_errors(log: str) -> list[str]:
    """Errors the page's scripts raised or resources that failed to load, from Chromium's log."""
    return [line for line in log.splitlines()
            if "CONSOLE" in line and ("Uncaught" in line or "Error" in line) or "Failed to load resource" in line]


def missing_images(dom: str, page: Path) -> list[str]:
    """The page's images whose file is not in the built book (or is empty): what would show as a
    broken image. Inline (data:) images count as loaded."""
    out = []
    for src in re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', dom):
        if src.startswith("data:"):
            continue
        target = (page.parent / html_module.unescape(src).split("?")[0]).resolve()
        if not target.is_file() or target.stat().st_size == 0:
            out.append(src)
    return out


CHAPTER_PAGES = [f"book/executed/{name}.html" for name in runner.NOTEBOOKS]


def test_every_chapter_renders_its_math_in_a_browser(built_book, chromium, tmp_path):
    """Every chapter page typesets its formulas with the book's MathJax, offline, without script
    errors; screenshots of chapters 1, 4 and 6 go to _build/screenshots/ for a person to look at."""
    _, html = built_book
    for page in CHAPTER_PAGES:
        dom, log = render(chromium, html / page, tmp_path / "profile")
        assert not math_problems(dom), (page, math_problems(dom))
        assert not console_errors(log), (page, console_errors(log))
        assert "<img" in dom and not missing_images(dom, html / page), (page, missing_images(dom, html / page))
        assert "<table" in dom, page  # the paper-vs-ours tables are tables
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name in ("01_theorem", "04_matrix_completion", "06_fewshot_stsb"):
        shot = SCREENSHOTS / f"{name}.png"
        render(chromium, html / f"book/executed/{name}.html", tmp_path / "profile", shot)
        assert shot.stat().st_size > 20_000, name


def test_the_browser_test_fails_when_math_does_not_render(built_book, chromium, tmp_path):
    """The check above, on a copy of the book without its MathJax: chapter 1 shows raw TeX."""
    _, html = built_book
    broken = tmp_path / "html"
    shutil.copytree(html, broken)
    (broken / "_static" / "mathjax" / "tex-svg-full.js").unlink()
    dom, _ = render(chromium, broken / "book/executed/01_theorem.html", tmp_path / "profile")
    problems = math_problems(dom)
    assert any(p.startswith("raw TeX") for p in problems) and "no formula typeset (no mjx-container element)" in problems
    # And a figure whose file is gone is reported as not loaded.
    page = broken / "book/executed/01_theorem.html"
    assert not missing_images(dom, page)
    first = re.search(r'<img\b[^>]*\bsrc="(\.\./\.\./_images/[^"]+)"', dom).group(1)
    (page.parent / first).resolve().unlink()
    assert missing_images(dom, page) == [first]
