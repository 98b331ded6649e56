"""Reading evaluation sets: every bad line is reported as ``file:line: reason``.

An evaluation that silently skipped half its questions would report a number nobody can trust,
so the readers here refuse the whole file on the first bad record, and refuse an empty file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from taigimed.utils import iter_jsonl

T = TypeVar("T")


class EvalDataError(ValueError):
    """An evaluation set that cannot be scored; the message names the file, line and fix."""


def read_eval_set(
    path: str | Path, parse: Callable[[dict[str, Any], str], T], what: str, limit: int = 0
) -> list[T]:
    """Parse every JSONL record of ``path`` with ``parse(obj, where)``; fail loudly on any error.

    ``parse`` raises ``EvalDataError`` (or ``ValueError``) with a reason; it is re-raised with the
    location. ``limit`` > 0 keeps the first ``limit`` records (after validating them).
    """
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(
            f"{path}: {what} file not found; run `taigimed prepare` or point the eval config at it"
        )
    records: list[T] = []
    try:
        for line, obj in iter_jsonl(path):
            where = f"{path}:{line}"
            if not isinstance(obj, dict):
                raise EvalDataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            try:
                records.append(parse(obj, where))
            except EvalDataError:
                raise
            except (ValueError, TypeError, KeyError) as err:
                raise EvalDataError(f"{where}: {err}") from None
            if limit and len(records) >= limit:
                break
    except EvalDataError:
        raise
    except ValueError as err:  # iter_jsonl's "file:line: invalid JSON"
        raise EvalDataError(str(err)) from None
    if not records:
        raise EvalDataError(f"{path}: {what} file is empty; nothing to evaluate")
    return records


def require_str(obj: dict[str, Any], key: str, where: str, allow_empty: bool = False) -> str:
    """``obj[key]`` as a string, or an error naming the field."""
    if key not in obj:
        raise EvalDataError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise EvalDataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise EvalDataError(f"{where}: field {key!r} is empty")
    return value
