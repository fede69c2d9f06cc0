"""A git revision of this repository checked out beside it, for the benchmarks that compare two."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def checked_out(rev: str, work: Path) -> Iterator[Path]:
    """The tree of ``rev`` (a detached ``git worktree`` in ``work``), removed on leaving."""
    tree = Path(work) / f"tree-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
