"""Small helpers every area needs: JSONL with located errors, atomic writes, hashes, logging.

They live here once so that each reader reports bad lines the same way (``file:line: reason``)
and every artifact is written atomically (a crash mid-write never leaves half a file behind
that a resumed run would trust).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BadRecord:
    """One input record that could not be used, with where it came from and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class ReadReport:
    """Counts for one input file: how many records were read and which ones were rejected."""

    path: str
    read: int = 0
    bad: list[BadRecord] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        total = self.read + len(self.bad)
        return len(self.bad) / total if total else 0.0


def iter_jsonl(path: str | Path, report: ReadReport | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank JSON line.

    A malformed line is recorded in ``report`` (when given) and skipped, or raises
    ``ValueError`` naming ``file:line`` when no report is collecting errors.
    """
    path = Path(path)
    with path.open(encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                bad = BadRecord(str(path), number, f"invalid JSON: {err.msg} (column {err.colno})")
                if report is None:
                    raise ValueError(str(bad)) from None
                report.bad.append(bad)
                continue
            if report is not None:
                report.read += 1
            yield number, obj


def read_jsonl(path: str | Path) -> list[Any]:
    """All objects of a JSONL file; any malformed line raises with ``file:line``."""
    return [obj for _, obj in iter_jsonl(path)]


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside ``path`` and move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Write records as UTF-8 JSONL atomically; return how many were written."""
    count = 0
    with atomic_open(path) as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json(path: str | Path, obj: Any) -> None:
    """Write pretty UTF-8 JSON atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2, default=str)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file in the error when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, for data hashes in model cards and cache keys."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def git_commit(cwd: str | Path = REPO_ROOT) -> str:
    """The current git commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def setup_logging(level: str | int = "INFO") -> None:
    """One readable log format for every CLI: time, level, logger, message."""
    logging.basicConfig(
        level=level if isinstance(level, int) else level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
