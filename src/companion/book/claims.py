"""The paper's claims as data: each chapter states its claims once, as ``Claim`` objects built
from its flat metrics; the notebook's last cell and the tests call the same ``check_claims``.

A claim is a sentence, whether it holds, and the numbers it compared. ``verify`` raises
``ClaimsFailed`` listing every claim that does not hold (not only the first), so a failed
notebook says at once which of the paper's statements this run contradicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class Claim:
    """One checked statement.

    Attributes:
      statement: what is claimed, in words, with its margin ("compressed ≥ random narrow + 0.1").
      holds: whether the run's numbers satisfy it.
      detail: the numbers compared, for the message and the book.
    """

    statement: str
    holds: bool
    detail: str = ""

    def __str__(self) -> str:
        mark = "holds" if self.holds else "FAILS"
        return f"[{mark}] {self.statement}" + (f" ({self.detail})" if self.detail else "")


class ClaimsFailed(AssertionError):
    """Raised by ``verify`` when at least one claim does not hold; lists them all."""


def claim(statement: str, holds: bool, detail: str = "") -> Claim:
    """A Claim with ``holds`` coerced to a plain bool (NumPy comparisons give np.bool_)."""
    return Claim(statement, bool(holds), detail)


def verify(claims: Sequence[Claim]) -> list[Claim]:
    """Return ``claims`` if every one holds; otherwise raise ClaimsFailed naming the failures."""
    claims = list(claims)
    failed = [c for c in claims if not c.holds]
    if failed:
        raise ClaimsFailed(f"{len(failed)} of {len(claims)} claims do not hold:\n"
                           + "\n".join(str(c) for c in failed))
    return claims


def require(metrics: Mapping[str, float], *keys: str) -> None:
    """Refuse metrics that lack a key a claim needs (a renamed metric must not pass silently)."""
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise KeyError(f"metrics lack {missing}; was the chapter's summary() changed?")


@dataclass(frozen=True)
class PaperValue:
    """A number (or short statement) the paper reports, with where it comes from.

    Attributes:
      value: the paper's number, e.g. 0.598, or a short statement such as "≈ 10×".
      source: where a reader finds it, e.g. "arXiv:2406.04112 (v3), Fig. 1", or the authors'
        logs ("deep-lora-transformers@618c410, logs").
      spread: its standard deviation over seeds where the paper gives one.
    """

    value: float | str
    source: str
    spread: float | None = None

    def text(self, digits: int = 3) -> str:
        """'0.598 ± 0.103', or the statement itself."""
        if isinstance(self.value, str):
            return self.value
        out = f"{self.value:.{digits}f}"
        return out + (f" ± {self.spread:.{digits}f}" if self.spread is not None else "")
