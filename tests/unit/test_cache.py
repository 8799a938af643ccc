"""File digests are remembered by size, mtime and inode, and recomputed when those change."""

from __future__ import annotations

import os

from slmdeploy.execute.cache import Store
from slmdeploy.plan import digests as digest_module
from slmdeploy.plan.digests import DigestCache


def test_digest_is_reused_until_the_file_changes(tmp_path, monkeypatch):
    weights = tmp_path / "model" / "weights.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"a" * 1000)
    hashed = []
    real = digest_module._hash_file
    monkeypatch.setattr(digest_module, "_hash_file", lambda path: hashed.append(path) or real(path))
    digests = DigestCache(tmp_path / "digests.json")
    first = digests.tree_digest(weights.parent)
    digests.save()
    again = DigestCache(tmp_path / "digests.json").tree_digest(weights.parent)
    assert first == again and hashed == [weights]
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(1, 1))
    changed = DigestCache(tmp_path / "digests.json").tree_digest(weights.parent)
    assert changed != first and hashed == [weights, weights]


def test_tree_digest_covers_names_and_contents(tmp_path):
    digests = DigestCache(tmp_path / "digests.json")
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "x").write_text("1")
    before = digests.tree_digest(folder)
    (folder / "x").rename(folder / "y")
    assert digests.tree_digest(folder) != before


def test_staged_output_is_removed_unless_committed(tmp_path):
    store = Store(tmp_path / ".slmdeploy")
    with store.staging() as staged:
        (staged / "out" / "file").write_text("x")
    assert not staged.exists()
    with store.staging() as staged:
        (staged / "out" / "file").write_text("x")
        entry = store.commit(staged, "k" * 64, {"stage": "convert"})
    assert (entry.out / "file").read_text() == "x"
    assert store.get("k" * 64).record["output_digest"] == entry.output_digest
    assert store.get("missing") is None
