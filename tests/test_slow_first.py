"""The test suite's own scheduling: the long files named in SLOW_FIRST exist and go first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SLOW_FIRST, slow_rank

ROOT = Path(__file__).resolve().parents[1]


def test_every_slow_first_entry_is_an_existing_test_file_or_folder() -> None:
    for entry in SLOW_FIRST:
        path = ROOT / entry
        assert path.is_dir() if entry.endswith("/") else path.is_file(), entry
    assert len(set(SLOW_FIRST)) == len(SLOW_FIRST)


def test_files_rank_in_slow_first_order_and_the_rest_after() -> None:
    ranks = [slow_rank(entry + ("x.py" if entry.endswith("/") else "")) for entry in SLOW_FIRST]
    assert ranks == list(range(len(SLOW_FIRST)))
    assert slow_rank("tests/common/test_intents.py") == len(SLOW_FIRST)


def test_xdist_keeps_the_collection_order(pytestconfig: pytest.Config) -> None:
    # xdist's default (files with most tests first) would undo SLOW_FIRST; without the xdist
    # plugin (-p no:xdist) the option does not exist and nothing reorders files
    assert getattr(pytestconfig.option, "loadscopereorder", False) is False
