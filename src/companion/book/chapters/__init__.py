"""One module per chapter (notebook) of the book, each owning its chapter:

- ``Config`` (a frozen dataclass) and ``config(profile, **overrides)``: the settings of the
  "smoke" (CPU, toy size) or "full" (paper scale) profile; both run the same code path;
- ``run(config)``: the experiment, returning a typed result (no files, no plots);
- ``summary(result)``: the flat metrics written to metrics.json (one key per number);
- ``PAPER``: the paper's numbers, each a ``claims.PaperValue`` with its source;
- ``table(result, stamp)``: the paper-vs-ours Markdown table shown in the book;
- ``check_claims(metrics, profile)``: the paper's claims with margins, checked on the metrics
  (``claims.verify``); the notebook's last cell and the tests call this same function.

A notebook is then parameters → ``config`` → ``run`` → plots (``companion.book.plots``) →
``summary``/``table`` → ``check_claims``. A new chapter is a new module here, a notebook in
``notebooks/`` and an entry in ``companion.book.notebooks.NOTEBOOKS`` and ``_toc.yml``.
"""

# Notebook name → chapter module (under companion.book.chapters).
CHAPTERS = {
    "01_theorem": "ch01_theorem",
    "02_proof_verification": "ch02_proof",
    "03_compressed_trajectories": "ch03_trajectories",
    "04_matrix_completion": "ch04_completion",
    "05_invariant_subspaces_bert": "ch05_subspaces",
    "06_fewshot_stsb": "ch06_fewshot",
    "07_glue_limited_data": "ch07_glue",
    "08_reproduction_report": "ch08_report",
}
