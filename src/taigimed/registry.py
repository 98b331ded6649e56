"""Model registry: numbered versions (model, card, metrics, gate verdict) and a champion pointer.

Layout under a root (``file:///path`` locally, ``s3://bucket/prefix`` on a cluster)::

    versions/v1/model/...        the merged model (safetensors + tokenizer)
    versions/v1/metrics.json     evaluation metrics
    versions/v1/gate.json        the gate verdict (always a pass: failed models are refused)
    versions/v1/MODEL_CARD.md
    versions/v1/gate_held.json   the model spec (also in model/taigimed.json), and the guard
                                 policy and safety suite version the gate evaluated it with
    versions/v1/version.json     written last: a version without it does not exist
    champion.json                {"version": "v1", "history": [...]} (the gate reads it,
                                 deploy-canary writes it)

Writes never leave a half version visible. Locally a version is assembled in a hidden temporary
folder and renamed into place (atomic on one filesystem); on S3, ``version.json`` is the commit
marker uploaded after everything else, and readers ignore versions without it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from taigimed.spec import read_spec
from taigimed.utils import read_json, write_json

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^v(\d+)$")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done, with the reason."""


@dataclass
class VersionInfo:
    """One registered version: where it lives and what it scored."""

    version: str
    uri: str
    model_uri: str
    metrics: dict[str, Any]
    verdict: dict[str, Any]
    record: dict[str, Any]


def gate_held(model_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The model spec and what the gate's evaluation held it with: the guard policy and the
    safety suite version (from the metrics' ``meta``). The spec file itself travels inside
    ``model/``; this copy lets a reader check a version without downloading weights."""
    meta = metrics.get("meta") or {}
    spec = read_spec(model_dir)
    return {
        "model_spec": spec.to_dict() if spec else None,
        "guard_policy": meta.get("guard_policy"),
        "safety_suite": meta.get("safety_suite"),
        "safety_suite_sha256": meta.get("safety_suite_sha256"),
    }


def _verdict_dict(verdict: Any) -> dict[str, Any]:
    if hasattr(verdict, "to_dict"):
        return verdict.to_dict()
    if isinstance(verdict, dict):
        return verdict
    raise RegistryError(f"verdict must be a GateResult or a gate.json dict, got {type(verdict)}")


def _version_number(name: str) -> int | None:
    match = _VERSION.match(name)
    return int(match.group(1)) if match else None


# --- storage backends -----------------------------------------------------------------------


class LocalStore:
    """A directory; atomic renames make versions appear whole or not at all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "versions").mkdir(parents=True, exist_ok=True)

    def uri(self, key: str) -> str:
        return (self.root / key).resolve().as_uri()

    def version_names(self) -> list[str]:
        versions = self.root / "versions"
        return [p.name for p in versions.iterdir() if (p / "version.json").is_file()]

    def all_version_names(self) -> list[str]:
        return [p.name for p in (self.root / "versions").iterdir() if _version_number(p.name)]

    def read_json(self, key: str) -> Any | None:
        path = self.root / key
        return read_json(path) if path.is_file() else None

    def write_json(self, key: str, obj: Any) -> None:
        write_json(self.root / key, obj)

    def publish_version(self, name: str, files: dict[str, Any], model_dir: Path) -> None:
        """Build the version in a temp dir, then rename it to ``versions/<name>``."""
        versions = self.root / "versions"
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=versions))
        try:
            copy_model(model_dir, tmp / "model")
            for key, content in files.items():
                target = tmp / key
                if isinstance(content, str):
                    target.write_text(content, encoding="utf-8")
                else:
                    target.write_text(
                        json.dumps(content, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
                    )
            os.rename(tmp, versions / name)  # fails if another writer took the name
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def copy_model(src: Path, dst: Path) -> None:
    """Hard-link model files where possible (same filesystem: no copy of GBs), else copy."""
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


class S3Store:
    """``s3://bucket/prefix`` through boto3; ``version.json`` is uploaded last as the commit."""

    def __init__(self, bucket: str, prefix: str, client: Any | None = None) -> None:
        if client is None:
            import boto3

            endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
            client = boto3.client("s3", endpoint_url=endpoint or None)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.key(key)}"

    def _names(self, marker: str | None) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        names = set()
        base = self.key("versions/")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for obj in page.get("Contents", []):
                rest = obj["Key"][len(base) :]
                name, _, tail = rest.partition("/")
                if _version_number(name) and (marker is None or tail == marker):
                    names.add(name)
        return sorted(names)

    def version_names(self) -> list[str]:
        return self._names("version.json")

    def all_version_names(self) -> list[str]:
        return self._names(None)

    def read_json(self, key: str) -> Any | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def write_json(self, key: str, obj: Any) -> None:
        data = json.dumps(obj, ensure_ascii=False, indent=2).encode()
        self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=data)

    def publish_version(self, name: str, files: dict[str, Any], model_dir: Path) -> None:
        """Upload model and files, then ``version.json``: readers see the version only then."""
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                key = self.key(f"versions/{name}/model/{path.relative_to(model_dir).as_posix()}")
                self.client.upload_file(str(path), self.bucket, key)
        marker = files.pop("version.json")
        for key, content in files.items():
            body = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
            self.client.put_object(
                Bucket=self.bucket, Key=self.key(f"versions/{name}/{key}"), Body=body.encode()
            )
        self.write_json(f"versions/{name}/version.json", marker)


# --- the registry ---------------------------------------------------------------------------


class Registry:
    """Versions and the champion pointer under ``root`` (``file://`` or ``s3://``; a plain path
    is taken as a local directory)."""

    def __init__(self, root: str | Path, s3_client: Any | None = None) -> None:
        text = str(root)
        parsed = urlparse(text)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise RegistryError(f"{text}: an s3 root needs a bucket: s3://bucket/prefix")
            self.store: LocalStore | S3Store = S3Store(parsed.netloc, parsed.path, s3_client)
        elif parsed.scheme in ("file", ""):
            path = Path(parsed.path if parsed.scheme == "file" else text).expanduser()
            self.store = LocalStore(path)
        else:
            raise RegistryError(f"{text}: registry root must be file://... or s3://...")
        self.root = text

    def list(self) -> list[str]:
        """Complete versions, oldest first."""
        return sorted(self.store.version_names(), key=lambda n: _version_number(n) or 0)

    def _next_version(self) -> str:
        numbers = [_version_number(n) or 0 for n in self.store.all_version_names()]
        return f"v{max(numbers, default=0) + 1}"

    def register(
        self,
        model_dir: str | Path,
        metrics: dict[str, Any],
        verdict: Any,
        card: str | Path,
        source: dict[str, Any] | None = None,
    ) -> str:
        """Store a gated model as the next version; a failed gate verdict raises RegistryError."""
        verdict_d = _verdict_dict(verdict)
        if verdict_d.get("passed") is not True:
            reasons = "; ".join(verdict_d.get("reasons", [])) or "no 'passed: true' in verdict"
            raise RegistryError(f"refusing to register a model that failed the gate: {reasons}")
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise RegistryError(f"{model_dir}: not a model directory (no config.json)")
        card_text = Path(card).read_text(encoding="utf-8") if _is_file(card) else str(card)
        for _attempt in range(5):
            name = self._next_version()
            record = {
                "version": name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "model_uri": self.storage_uri(name),
                "source": source or {"model_dir": str(model_dir)},
                "id": uuid.uuid4().hex,
            }
            files = {
                "metrics.json": metrics,
                "gate.json": verdict_d,
                "MODEL_CARD.md": card_text,
                # What the gate held, beside the model's own spec (model/taigimed.json).
                "gate_held.json": gate_held(model_dir, metrics),
                "version.json": record,
            }
            try:
                self.store.publish_version(name, files, model_dir)
            except OSError as err:
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # another writer took this number; try the next
                raise
            log.info("registered %s at %s", name, self.store.uri(f"versions/{name}"))
            return name
        raise RegistryError("could not allocate a version number after 5 attempts")

    def get(self, version: str) -> VersionInfo:
        record = self.store.read_json(f"versions/{version}/version.json")
        if record is None:
            raise RegistryError(f"{self.root}: no version {version!r}; known: {self.list()}")
        return VersionInfo(
            version=version,
            uri=self.store.uri(f"versions/{version}"),
            model_uri=self.storage_uri(version),
            metrics=self.store.read_json(f"versions/{version}/metrics.json") or {},
            verdict=self.store.read_json(f"versions/{version}/gate.json") or {},
            record=record,
        )

    def storage_uri(self, version: str) -> str:
        """URI of the model folder, as an InferenceService ``storageUri`` takes it."""
        return self.store.uri(f"versions/{version}/model")

    def champion(self) -> str | None:
        pointer = self.store.read_json("champion.json")
        return pointer.get("version") if pointer else None

    def set_champion(self, version: str) -> None:
        """Point the champion at ``version`` (must exist); the previous ones are kept in order."""
        self.get(version)
        pointer = self.store.read_json("champion.json") or {}
        history = list(pointer.get("history", []))
        if pointer.get("version"):
            history.append(pointer["version"])
        self.store.write_json(
            "champion.json",
            {
                "version": version,
                "storage_uri": self.storage_uri(version),
                "set_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "history": history,
            },
        )


def _is_file(card: str | Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        return len(str(card)) < 4096 and "\n" not in str(card) and Path(card).is_file()
    return False


# --- CLI ------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """``taigimed register [add|list|show|champion|set-champion] --root ...``."""
    parser = subparsers.add_parser(
        "register",
        help="model registry: add a gated version, list, show, read or set the champion",
        description="Model registry under --root (file://DIR or s3://bucket/prefix). The default "
        "action 'add' stores --model with --metrics, --gate (must be a pass) and --card as the "
        "next version and prints it.",
    )
    parser.add_argument(
        "action",
        nargs="?",
        default="add",
        choices=["add", "list", "show", "champion", "set-champion"],
        help="what to do (default add)",
    )
    parser.add_argument("version", nargs="?", help="version for show / set-champion (e.g. v3)")
    parser.add_argument("--root", required=True, help="registry root: file:///path or s3://b/p")
    parser.add_argument("--model", type=Path, help="merged model directory (add)")
    parser.add_argument("--metrics", type=Path, help="metrics.json (add)")
    parser.add_argument("--gate", type=Path, help="gate.json with a pass verdict (add)")
    parser.add_argument("--card", type=Path, help="MODEL_CARD.md (add)")
    parser.add_argument("--set-champion", action="store_true", help="(add) also make it champion")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    try:
        registry = Registry(args.root)
        if args.action == "add":
            missing = [
                f"--{k}" for k in ("model", "metrics", "gate", "card") if not getattr(args, k)
            ]
            if missing:
                raise RegistryError(f"register add needs {', '.join(missing)}")
            version = registry.register(
                args.model, read_json(args.metrics), read_json(args.gate), args.card
            )
            if args.set_champion:
                registry.set_champion(version)
            print(version)
        elif args.action == "list":
            champion = registry.champion()
            for name in registry.list():
                print(f"{name}{'  (champion)' if name == champion else ''}")
        elif args.action == "show":
            info = registry.get(args.version or registry.champion() or "")
            print(json.dumps({**info.record, "uri": info.uri, "metrics": info.metrics}, indent=2))
        elif args.action == "champion":
            print(registry.champion() or "")
        else:
            if not args.version:
                raise RegistryError("set-champion needs a version, e.g. v3")
            registry.set_champion(args.version)
            print(args.version)
    except (RegistryError, ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    return 0
