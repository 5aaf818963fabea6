"""Executable companion to "Compressible Dynamics in Deep Overparameterized Low-Rank Learning
& Adaptation" (Yaras, Wang, Balzano, Qu, ICML 2024; arXiv:2406.04112).

Two halves, as in the paper: ``companion.linear`` (deep linear networks: factorization → theory,
compression → completion; float64) and ``companion.adapt`` (BERT fine-tuning with LoRA and Deep
LoRA; float32). ``companion.book`` runs the chapters on top of both (profiles, results, smoke
regression, notebook execution, plots, and one module per chapter in ``book.chapters``);
``companion.bench`` times them; ``companion.cli`` is the command line. Imports flow one way:
book → adapt → linear. See ARCHITECTURE.md.
"""

__version__ = "0.1.0"
