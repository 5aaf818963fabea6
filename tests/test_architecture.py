"""The house rules of the package, enforced: imports flow one way (book → adapt → linear, with
bench and the CLI on top), and no reader-facing text cites files readers do not have."""

import ast
import re

import pytest

from conftest import ROOT

PACKAGE = ROOT / "src" / "companion"

# Which subpackages each part may import (besides itself). adapt may use linear's compression
# (compressed Deep LoRA builds its outer factors with the same recipe as the linear half).
ALLOWED = {
    "linear": set(),
    "adapt": {"linear.compression"},
    "book": {"linear", "adapt"},
    "bench": {"linear", "adapt", "book.profiles"},
    "cli": {"linear", "adapt", "book", "bench"},
}


def _imports(path):
    """Every ``companion.*`` module a file imports, at any depth (function-level ones too)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("companion")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("companion"):
            found |= {f"{node.module}.{a.name}" for a in node.names}  # what is imported, fully named
    return {m.removeprefix("companion").lstrip(".") for m in found} - {""}


def _part(relative):
    return relative.parts[0].removesuffix(".py") if relative.parts[0] != "__init__.py" else None


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _part(p.relative_to(PACKAGE)))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    part = _part(path.relative_to(PACKAGE))
    allowed = ALLOWED[part] | {part}
    for module in _imports(path):
        ok = any(module == a or module.startswith(a + ".") for a in allowed)
        assert ok, f"{path.relative_to(PACKAGE)} imports companion.{module}; {part}/ may import only {sorted(allowed)}"


def test_the_rule_catches_a_wrong_import(tmp_path):
    """The check above can fail: a linear module importing adapt is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from companion.adapt import bert\n")
    (module,) = _imports(bad)
    assert module == "adapt.bert" and not any(module.startswith(a) for a in ALLOWED["linear"] | {"linear"})


def test_nothing_switches_global_jax_modes_at_import():
    for path in MODULES:
        for node in ast.parse(path.read_text()).body:  # module level only
            text = ast.unparse(node)
            assert "jax.config.update" not in text, f"{path.relative_to(PACKAGE)}: {text}"


READER_FACING = [*PACKAGE.rglob("*.py"), *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "book").glob("*.md"),
                 ROOT / "README.md", ROOT / "ARCHITECTURE.md"]


@pytest.mark.parametrize("path", READER_FACING, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_references(path):
    """Readers have the paper, not our notes or our issue tracker."""
    text = path.read_text()
    assert "PAPER.md" not in text, f"{path.relative_to(ROOT)} cites PAPER.md; cite arXiv:2406.04112 instead"
    hit = re.search(r"\b[Ii]ssues? #?\d+", text)
    assert not hit, f"{path.relative_to(ROOT)} mentions {hit.group(0)!r}"


def test_workflows_run_the_readme_commands():
    """CI runs `make test`; the Pages workflow publishes what `make book` renders."""
    import yaml

    flows = ROOT / ".github" / "workflows"
    ci = yaml.safe_load((flows / "ci.yml").read_text())
    assert any(step.get("run") == "make test" for step in ci["jobs"]["test"]["steps"])
    pages = yaml.safe_load((flows / "pages.yml").read_text())
    steps = pages["jobs"]["build"]["steps"]
    assert any(step.get("run") == "make book" for step in steps)
    upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-pages-artifact")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert any(str(s.get("uses", "")).startswith("actions/deploy-pages") for s in pages["jobs"]["deploy"]["steps"])
