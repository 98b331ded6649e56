"""Report: Markdown + self-contained HTML + PNG plots; scalar metrics on a KFP Metrics artifact."""

from __future__ import annotations

from taigimed.eval.report import log_kfp_metrics, write_report

CANDIDATE = {"medqa_accuracy": 0.31, "ppl_hanji": 20.5, "chrf": 12.0, "safety_pass_rate": 1.0}
CHAMPION = {"medqa_accuracy": 0.29, "ppl_hanji": 22.0, "chrf": 11.0, "safety_pass_rate": 1.0}
BASE = {"medqa_accuracy": 0.26, "ppl_hanji": 35.0, "chrf": 6.0, "safety_pass_rate": 1.0}


def test_report_has_plots_tables_and_samples(tmp_path):
    paths = write_report(
        tmp_path,
        CANDIDATE,
        CHAMPION,
        BASE,
        gate_markdown="**Gate: PASS**\n",
        breakdown={"figure": {"false": {"n": 10, "accuracy": 0.3}}},
        samples=[{"id": "a", "source": "湯還很燙", "reference": "湯猶閣足燒", "model": "湯|燒"}],
        safety_failures=[],
    )
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["chrf.png", "medqa_accuracy.png", "ppl_hanji.png", "safety_pass_rate.png"]
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    md = paths["markdown"].read_text()
    assert "| medqa_accuracy | 0.31 | 0.29 | 0.26 |" in md
    assert "![medqa_accuracy](plots/medqa_accuracy.png)" in md
    assert "湯猶閣足燒" in md and "湯\\|燒" in md  # a pipe in model output does not break the table
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 4  # images embedded: self-contained
    assert "<table>" in html and "Gate: PASS" in html


def test_report_without_champion_or_base(tmp_path):
    write_report(tmp_path, {"medqa_accuracy": 0.25, "note": "text is skipped"})
    assert "| metric | candidate |" in (tmp_path / "report.md").read_text()


def test_kfp_metrics_artifact_gets_every_scalar(tmp_path):
    from kfp.dsl import Metrics

    artifact = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    metrics = {**CANDIDATE, "breakdown": {"x": 1}, "ppl_tailo": float("nan"), "meta": "m"}
    assert log_kfp_metrics(metrics, artifact) == 4
    assert artifact.metadata == CANDIDATE
