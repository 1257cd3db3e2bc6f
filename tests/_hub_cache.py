"""A folder laid out as the Hugging Face hub cache, for tests that resolve hub ids offline."""

from __future__ import annotations

import shutil

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(root, source, repo="org/name", commit=COMMIT):
    """``models--org--name/{blobs, refs/main, snapshots/<commit>/...}`` with blob symlinks."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    blobs, snap = repo_dir / "blobs", repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for i, f in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        blob = blobs / f"{i:040x}"
        shutil.copy(f, blob)
        link = snap / f.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    return root
