"""Figures of the chapters, one module per half of the paper (``linear``, ``adapt``). Each
function takes arrays and returns ``(figure, columns)``, where ``columns`` holds exactly the
numbers drawn (long format) so ``Results.save_figure`` can write them beside the PNG. No
computation happens here beyond selecting what to draw.
"""

from __future__ import annotations


def stamp_figure(fig, stamp: str) -> None:
    """Write the profile-and-device line (``Results.stamp``) in the figure's bottom-right corner."""
    fig.text(0.99, 0.005, stamp, ha="right", va="bottom", fontsize=7, color="0.35")
