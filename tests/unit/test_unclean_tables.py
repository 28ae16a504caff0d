"""A worker that did not stop cleanly rebuilds its tables from the changelogs (issue 20, join-then-kill)."""

from __future__ import annotations

from pathlib import Path

from streams.worker import CLEAN_MARK, discard_unclean_tables, mark_clean


def state(tmp_path: Path) -> tuple[Path, Path]:
    tabledir = tmp_path / "v1" / "tables"
    (tabledir / "dedupe-3.db").mkdir(parents=True)
    (tabledir / "dedupe-3.db" / "000012.log").write_bytes(b"ghost")
    return tabledir, tmp_path / CLEAN_MARK


def test_state_left_by_a_killed_worker_is_discarded(tmp_path: Path) -> None:
    tabledir, mark = state(tmp_path)
    assert discard_unclean_tables(tabledir, mark) is True
    assert not tabledir.exists()


def test_state_of_a_clean_stop_is_kept_and_the_mark_is_used_up(tmp_path: Path) -> None:
    tabledir, mark = state(tmp_path)
    mark_clean(mark)
    assert discard_unclean_tables(tabledir, mark) is False
    assert (tabledir / "dedupe-3.db" / "000012.log").read_bytes() == b"ghost"
    assert not mark.exists(), "a crash of this run must find no mark"
    assert discard_unclean_tables(tabledir, mark) is True


def test_a_first_start_has_nothing_to_discard(tmp_path: Path) -> None:
    assert discard_unclean_tables(tmp_path / "v1" / "tables", tmp_path / CLEAN_MARK) is False
    (tmp_path / "v1" / "tables").mkdir(parents=True)
    assert discard_unclean_tables(tmp_path / "v1" / "tables", tmp_path / CLEAN_MARK) is False
