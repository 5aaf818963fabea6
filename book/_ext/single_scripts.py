"""Load each page script once.

sphinx-thebe (which Jupyter Book 1 always enables) registers its inline configuration script
(``const THEBE_JS_URL = …``) every time Sphinx reads the sources, so a page can carry it twice, and
a browser then stops at ``Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been
declared``. This extension drops the repeats from each page's scripts, keeping the first.
"""

from __future__ import annotations


def _key(script) -> tuple:
    """What makes two scripts the same: the file (None and "" both mean an inline one) and attributes."""
    attributes = getattr(script, "attributes", {}) or {}
    return (str(getattr(script, "filename", script) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    """``html-page-context`` handler: each (file, attributes) script once, in its first place."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
