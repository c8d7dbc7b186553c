"""Minimal pytrees: nested dict / list / tuple containers with array leaves.

Dicts are traversed in sorted-key order (as JAX does), so two dicts with the same keys flatten
the same way whatever their insertion order. ``None`` is an empty subtree.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class TreeDef(NamedTuple):
    kind: str  # "leaf" | "none" | "dict" | "list" | "tuple"
    meta: Any  # dict keys for "dict"
    children: tuple

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __str__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c}" for k, c in zip(self.meta, self.children)) + "}"
        inner = ", ".join(str(c) for c in self.children)
        return f"[{inner}]" if self.kind == "list" else f"({inner}{',' if len(self.children) == 1 else ''})"


# The recursions are module-level functions that take their accumulator as an argument: a nested
# function that calls itself sits in a reference cycle (function -> closure cell -> function),
# and with it the list of leaves, which kept every flattened array (a transform's inputs and
# results) alive until the next garbage collection.
def _flatten_into(t: Any, leaves: list) -> TreeDef:
    if t is None:
        return TreeDef("none", None, ())
    if isinstance(t, dict):
        keys = sorted(t.keys())
        return TreeDef("dict", tuple(keys), tuple(_flatten_into(t[k], leaves) for k in keys))
    if isinstance(t, (list, tuple)) and not hasattr(t, "_fields"):
        return TreeDef("list" if isinstance(t, list) else "tuple", None, tuple(_flatten_into(c, leaves) for c in t))
    leaves.append(t)
    return TreeDef("leaf", None, ())


def tree_flatten(tree: Any) -> tuple[list, TreeDef]:
    leaves: list = []
    treedef = _flatten_into(tree, leaves)
    return leaves, treedef


def _unflatten_from(td: TreeDef, it) -> Any:
    if td.kind == "leaf":
        return next(it)
    if td.kind == "none":
        return None
    children = [_unflatten_from(c, it) for c in td.children]
    if td.kind == "dict":
        return dict(zip(td.meta, children))
    return children if td.kind == "list" else tuple(children)


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    return _unflatten_from(treedef, iter(leaves))


def tree_map(fn, tree, *rest):
    leaves, td = tree_flatten(tree)
    others = []
    for r in rest:
        rl, rtd = tree_flatten(r)
        if rtd != td:
            raise ValueError(f"tree_map: tree structures differ: {td} vs {rtd}")
        others.append(rl)
    return tree_unflatten(td, [fn(*xs) for xs in zip(leaves, *others)])
