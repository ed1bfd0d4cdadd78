"""The git commit and dirty flag of the user's repository, without a process per run."""

from __future__ import annotations

import os
import subprocess

__all__ = ["git_info"]

_roots: dict[str, str | None] = {}
_dirty: dict[str, bool | None] = {}


def _find_root(path: str) -> str | None:
    if path in _roots:
        return _roots[path]
    cur, root = os.path.abspath(path), None
    while True:
        if os.path.exists(os.path.join(cur, ".git")):
            root = cur
            break
        parent = os.path.dirname(cur)
        if parent == cur:
            break
        cur = parent
    _roots[path] = root
    return root


def _git_dir(root: str) -> str:
    d = os.path.join(root, ".git")
    if os.path.isfile(d):  # a worktree or submodule: "gitdir: <path>"
        with open(d) as f:
            line = f.read().strip()
        if line.startswith("gitdir:"):
            d = os.path.normpath(os.path.join(root, line[7:].strip()))
    return d


def _read_head(gd: str) -> str | None:
    try:
        with open(os.path.join(gd, "HEAD")) as f:
            head = f.read().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head[4:].strip()
    for base in (gd, _common_dir(gd)):
        try:
            with open(os.path.join(base, ref)) as f:
                return f.read().strip()
        except OSError:
            pass
        try:
            with open(os.path.join(base, "packed-refs")) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
        except OSError:
            pass
    return None  # a branch with no commits yet


def _common_dir(gd: str) -> str:
    try:
        with open(os.path.join(gd, "commondir")) as f:
            return os.path.normpath(os.path.join(gd, f.read().strip()))
    except OSError:
        return gd


def git_info(path: str) -> dict | None:
    """``{"commit": sha, "dirty": bool}`` for the repository holding ``path``, or None.

    The commit is read from ``.git`` files on every call (cheap); whether the
    work tree is dirty is asked of git once per process and repository.
    """
    root = _find_root(path)
    if root is None:
        return None
    commit = _read_head(_git_dir(root))
    if root not in _dirty:
        try:
            r = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
            _dirty[root] = bool(r.stdout.strip()) if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            _dirty[root] = None
    return {"commit": commit, "dirty": _dirty[root], "root": root}
