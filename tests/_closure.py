"""The objects a root reaches, read through the store's verified reads (shared by the gc and fault tests)."""

from __future__ import annotations

from terra.objects import ObjectId, references


def closure(store, *roots: ObjectId) -> set[ObjectId]:
    """Every object ``roots`` reach, each read (and so verified) once.

    Raises:
        TerraError: an object is missing or damaged (what the callers look for).
    """
    seen: set[ObjectId] = set()
    stack = list(roots)
    while stack:
        oid = stack.pop()
        if oid not in seen:
            seen.add(oid)
            stack.extend(references(store.get(oid)))
    return seen
