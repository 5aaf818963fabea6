"""companion.book.pieces: finished parts of a long chapter run, kept so that a cut run resumes."""

import json

import pytest

from companion.book.pieces import PieceError, Pieces


def test_a_piece_is_computed_once_and_read_back(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"steps": 19500, "recovery_error": 1.5e-12, "method": "compressed"}

    first = Pieces(tmp_path, {"width": 1000, "lr": 5e3})
    row = first.get("sweep-rhat5-trial0-compressed", compute)
    again = Pieces(tmp_path, {"width": 1000, "lr": 5e3})
    assert again.get("sweep-rhat5-trial0-compressed", compute) == row and len(calls) == 1
    assert (first.computed, again.read) == (1, 1) and "1 read, 0 computed" in again.describe()
    doc = json.loads((tmp_path / "sweep-rhat5-trial0-compressed.json").read_text())
    assert doc["row"] == row and doc["settings"] == {"width": 1000, "lr": 5e3} and doc["wall_time_s"] >= 0
    assert not list(tmp_path.glob("*.partial"))


def test_pieces_of_other_settings_or_cut_ones_are_refused(tmp_path):
    Pieces(tmp_path, {"width": 1000, "lr": 5e3}).get("depth3-hidden10-lr300", lambda: {"steps": 1})
    with pytest.raises(PieceError, match="lr differ"):
        Pieces(tmp_path, {"width": 1000, "lr": 1e3}).get("depth3-hidden10-lr300", lambda: {"steps": 2})
    with pytest.raises(PieceError, match="lr differ"):
        Pieces(tmp_path, {"width": 1000, "lr": 1e3}).verify()
    assert Pieces(tmp_path, {"width": 1000, "lr": 5e3}).verify() == 1 and Pieces(None, {}).verify() == 0
    (tmp_path / "cut.json").write_text('{"format": 1, "row"')
    with pytest.raises(PieceError, match="not a whole piece"):
        Pieces(tmp_path, {"width": 1000, "lr": 5e3}).get("cut", lambda: {"steps": 3})
    (tmp_path / "moved.json").write_text((tmp_path / "depth3-hidden10-lr300.json").read_text())
    with pytest.raises(PieceError, match="holds the piece 'depth3-hidden10-lr300'"):
        Pieces(tmp_path, {"width": 1000, "lr": 5e3}).get("moved", lambda: {"steps": 4})
    with pytest.raises(ValueError, match="lower-case"):
        Pieces(tmp_path, {}).get("Bad Name", lambda: {})


def test_without_a_folder_every_piece_is_computed(tmp_path):
    store = Pieces(None, {"a": 1})
    assert store.get("x", lambda: {"v": 1}) == {"v": 1} and store.get("x", lambda: {"v": 2}) == {"v": 2}
    assert store.computed == 2 and "kept nowhere" in store.describe()


def test_a_piece_records_the_revision_its_run_started_at(tmp_path, monkeypatch):
    """A commit made while a long run goes on does not relabel the pieces it writes afterwards."""
    from companion.book import pieces

    monkeypatch.setattr(pieces, "git_revision", lambda: "aaaaaaa")
    store = Pieces(tmp_path, {"width": 1000})
    monkeypatch.setattr(pieces, "git_revision", lambda: "bbbbbbb")
    store.get("sweep-rhat5-trial0-narrow", lambda: {"steps": 50000})
    assert json.loads((tmp_path / "sweep-rhat5-trial0-narrow.json").read_text())["revision"] == "aaaaaaa"
