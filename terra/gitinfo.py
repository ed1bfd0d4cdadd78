"""The git commit and dirty flag of the user's repository, without a process per run."""

from __future__ import annotations

import os
import subprocess

__all__ = ["git_info"]

_roots: dict[str, str | None] = {}
_dirty: dict[str, bool | None] = {}
_git_dirs: dict[str, str] = {}
# Per git dir: the files the last read of HEAD consulted, their stat signatures, and the commit found.
_heads: dict[str, tuple[list[str], list, str | None]] = {}


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
    d = _git_dirs.get(root)
    if d is None:
        d = _git_dirs[root] = _find_git_dir(root)
    return d


def _find_git_dir(root: str) -> str:
    d = os.path.join(root, ".git")
    if os.path.isfile(d):  # a worktree or submodule: "gitdir: <path>"
        with open(d) as f:
            line = f.read().strip()
        if line.startswith("gitdir:"):
            d = os.path.normpath(os.path.join(root, line[7:].strip()))
    return d


def _stat(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _head_commit(gd: str) -> str | None:
    """The commit HEAD names, read again only when one of the files it was read from changed.

    A miss records it: reading HEAD and its ref (``.git`` file, ``commondir``,
    packed-refs in a worktree) costs several opens, a stat of each a fraction
    of that. Git replaces these files by renaming (new inode), so a change
    never keeps its signature.
    """
    cached = _heads.get(gd)
    if cached is not None and [_stat(p) for p in cached[0]] == cached[1]:
        return cached[2]
    paths: list[str] = []
    _read_head(gd, paths)
    # Signatures taken before the read they vouch for: a change racing it is seen next time.
    sig = [_stat(p) for p in paths]
    again: list[str] = []
    commit = _read_head(gd, again)
    if again == paths:
        _heads[gd] = (paths, sig, commit)
    return commit


_PER_WORKTREE = ("refs/bisect/", "refs/worktree/", "refs/rewritten/")


def _read_head(gd: str, consulted: list | None = None) -> str | None:
    """The commit HEAD names; ``consulted`` gets the path of every file read or looked for."""
    seen = consulted if consulted is not None else []
    seen.append(os.path.join(gd, "HEAD"))
    try:
        with open(os.path.join(gd, "HEAD")) as f:
            head = f.read().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head[4:].strip()
    common = _common_dir(gd)
    # A worktree's own git dir holds only its per-worktree refs; branches (and packed-refs) are shared.
    bases = (gd, common) if gd != common and ref.startswith(_PER_WORKTREE) else (common,)
    for base in bases:
        seen.append(os.path.join(base, ref))
        try:
            with open(os.path.join(base, ref)) as f:
                return f.read().strip()
        except OSError:
            pass
        seen.append(os.path.join(base, "packed-refs"))
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
    # Also consulted: a worktree's commondir (unchanged for its lifetime, like its .git file).
    try:
        with open(os.path.join(gd, "commondir")) as f:
            return os.path.normpath(os.path.join(gd, f.read().strip()))
    except OSError:
        return gd


def git_info(path: str) -> dict | None:
    """``{"commit": sha, "dirty": bool}`` for the repository holding ``path``, or None.

    The commit is read from ``.git`` files when they changed since the last
    call (a few stats); whether the work tree is dirty is asked of git once
    per process and repository.
    """
    root = _find_root(path)
    if root is None:
        return None
    commit = _head_commit(_git_dir(root))
    if root not in _dirty:
        try:
            r = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
            _dirty[root] = bool(r.stdout.strip()) if r.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            _dirty[root] = None
    return {"commit": commit, "dirty": _dirty[root], "root": root}
