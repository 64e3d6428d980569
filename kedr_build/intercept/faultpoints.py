"""Fault points: which catalog functions a scenario can fail, and under what names.

A *function point* is one exported name (``__kmalloc``); a *family point* is the
source-level API as users think of it (``kmalloc``): every exported name the
inline ``kmalloc()``/``kmalloc_node()``/``kmalloc_track_caller()`` compile to on
any kernel (``kmalloc_trace``, ``__kmalloc``, ``__kmalloc_node``, the 6.10+
``*_noprof`` names...). A function is fault-capable when the catalog gives it a
failure value ("fault" other than "none") and failing it is a failure rather
than a skipped release: frees, unlocks, timer deletions and any other entry that
only releases (``frees`` without ``allocates``: cancel_work_sync, flush_work, whose
fault value is what a refused free returns) are never failed (not calling them is a
side effect, not an error the driver could handle: a work item left queued after
its module is gone oopsed e1000e's next load on debian-6.12).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from kedr_build.errors import KedrError
from kedr_build.intercept.catalog import CatalogEntry

NOT_FAILED_FAMILIES = frozenset({"free", "unlock", "timer"})
# API spellings that are the same point as the API without the suffix.
_VARIANT_SUFFIXES = ("_track_caller", "_node", "_lru")


def fault_capable(entry: CatalogEntry) -> bool:
    releases_only = entry.frees is not None and entry.allocates is None
    return (entry.fault != "none" and entry.family not in NOT_FAILED_FAMILIES
            and not releases_only)


def family_point(entry: CatalogEntry) -> str:
    """``kmalloc`` for kmalloc_trace, __kmalloc_node, __kmalloc_node_track_caller_noprof..."""
    api = entry.api
    changed = True
    while changed:
        changed = False
        for suffix in _VARIANT_SUFFIXES:
            if api.endswith(suffix) and len(api) > len(suffix):
                api = api[: -len(suffix)]
                changed = True
    return api


def size_expr(entry: CatalogEntry) -> str | None:
    """The call's size, computable before the call (not one that reads the result)."""
    if entry.size is None or "kedr_ret" in entry.size:
        return None
    return entry.size


def gfp_arg(entry: CatalogEntry) -> str | None:
    return next((a.name for a in entry.args if a.type == "gfp_t"), None)


@dataclass(frozen=True)
class FaultPoint:
    name: str
    functions: tuple[str, ...]      # exported names it covers
    has_size: bool                  # some of them have a size a bound can test
    has_gfp: bool                   # some of them take gfp flags
    family: bool = False            # a family point (the API), not one exported name


def fault_points(entries: Iterable[CatalogEntry]) -> tuple[FaultPoint, ...]:
    """Family points first (sorted), then the function points that are not a family name."""
    capable = [e for e in entries if fault_capable(e)]
    families: dict[str, list[CatalogEntry]] = {}
    for e in capable:
        families.setdefault(family_point(e), []).append(e)
    points = [_point(name, es, True) for name, es in sorted(families.items())]
    points += [_point(e.name, [e]) for e in capable if e.name not in families]
    return tuple(points)


def _point(name: str, entries: list[CatalogEntry], family: bool = False) -> FaultPoint:
    return FaultPoint(name=name, functions=tuple(dict.fromkeys(e.name for e in entries)),
                      has_size=any(size_expr(e) is not None for e in entries),
                      has_gfp=any(gfp_arg(e) is not None for e in entries), family=family)


POINTS_FILE = "fault_points.json"


def points_json(points: Iterable[FaultPoint]) -> str:
    """What :func:`load_points` reads: the replacement module's points, beside its source."""
    return json.dumps([asdict(p) for p in points], indent=2) + "\n"


def load_points(path: Path) -> dict[str, FaultPoint]:
    """The fault points of a generated replacement module (``<dir>/fault_points.json``)."""
    try:
        data = json.loads(path.read_text())
        return {d["name"]: FaultPoint(name=d["name"], functions=tuple(d["functions"]),
                                      has_size=bool(d["has_size"]), has_gfp=bool(d["has_gfp"]),
                                      family=bool(d.get("family", False)))
                for d in data}
    except FileNotFoundError:
        raise KedrError(f"{path}: missing; regenerate the replacement module") from None
    except (ValueError, KeyError, TypeError) as e:
        raise KedrError(f"{path}: not a fault point list ({e})") from None
