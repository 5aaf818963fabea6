"""Executable companion to "Compressible Dynamics in Deep Overparameterized Low-Rank Learning
& Adaptation" (Yaras, Wang, Balzano, Qu, ICML 2024).

Two halves (PAPER.md): deep linear networks (``factorization`` → ``theory``) and, in later
chapters, adaptation. The book's machinery (``configs``, ``experiments``, ``results``,
``plotting``, ``runner``, ``baselines``, ``cli``) sits on top; the math imports none of it.
"""

__version__ = "0.1.0"
