"""Point the book's Colab launch buttons at the notebooks people run, ``notebooks/NAME.ipynb``.

sphinx-book-theme builds a launch link from the page's own path, and the book's chapter pages are
the executed copies in ``book/executed/`` that ``companion reproduce`` writes and git ignores, so
its link would open a file the repository does not have. This extension runs after the theme's
``add_launch_buttons`` (``html-page-context``, priority 501) and rewrites those links.
"""

from __future__ import annotations

EXECUTED = "/book/executed/"
SOURCES = "/notebooks/"


def _rewrite(node):
    """Replace the executed-copy path in every launch-button URL under ``node`` (dicts, lists)."""
    if isinstance(node, dict):
        url = node.get("url")
        if isinstance(url, str) and "colab.research.google.com" in url and EXECUTED in url:
            node["url"] = url.replace(EXECUTED, SOURCES)
        for value in node.values():
            _rewrite(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _rewrite(value)


def point_at_sources(app, pagename, templatename, context, doctree):
    """``html-page-context`` handler: the chapter's Colab button opens ``notebooks/NAME.ipynb``."""
    _rewrite(context.get("header_buttons", []))


def setup(app):
    app.connect("html-page-context", point_at_sources, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
