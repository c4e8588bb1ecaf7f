"""Whole-or-nothing writes: the target holds either its old bytes or the new ones, never a part."""

import pytest

from chatbot.files import replacing


def test_a_finished_write_replaces_the_target_and_leaves_no_partial(tmp_path):
    target = tmp_path / "deep" / "state.json"
    with replacing(target) as partial:
        assert partial.parent == target.parent and partial != target
        partial.write_text("new")
        assert not target.exists()  # nothing visible until the block finishes
    assert target.read_text() == "new"
    assert list(target.parent.iterdir()) == [target]


def test_a_write_that_fails_keeps_the_old_bytes_and_removes_the_partial(tmp_path):
    target = tmp_path / "kept" / "state.json"
    target.parent.mkdir()
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk gone"), replacing(target) as partial:
        partial.write_text("half")
        raise RuntimeError("disk gone")
    assert target.read_text() == "old"
    assert list(target.parent.iterdir()) == [target]
