"""The eval task registry: tasks declare their metrics and directions once; evaluate, the gate
and the report read them from there, so a new metric is one task module plus a gate threshold.
"""

from __future__ import annotations

import json
import re

import pytest

from taigimed.config import ConfigError, load_config
from taigimed.eval import tasks
from taigimed.eval.config import EvalConfig, GateConfig, MetricRule
from taigimed.eval.gate import gate
from taigimed.eval.report import write_report
from taigimed.eval.tasks import EvalTask, Metric, TaskOutput


@pytest.fixture
def extra_task(monkeypatch):
    """Register a throwaway task for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(tasks, "_TASKS", dict(tasks.all_tasks()))

    def add(task: EvalTask) -> EvalTask:
        return tasks.register(task)

    return add


def test_the_built_in_tasks_register_themselves_in_run_order():
    registered = tasks.all_tasks()
    assert list(registered) == ["mcq", "lm", "gen", "answers", "safety"]
    for name, task in registered.items():
        assert task.section == name and hasattr(EvalConfig(), task.section)
        assert task.metrics, f"{name} declares no metric"


def test_directions_come_from_the_tasks_and_families_match():
    assert tasks.direction("medqa_accuracy") == "higher"
    assert tasks.direction("ppl_hanji") == "lower"
    assert tasks.direction("ppl_pojhanji") == "lower"  # the ppl_{script} family
    assert tasks.direction("safety_pass_rate_nan") == "higher"
    assert tasks.direction("safety_overtrigger_rate") == "lower"
    assert tasks.direction("medqa_questions") is None  # a count: no better or worse
    assert tasks.direction("no_such_metric") is None
    assert tasks.find_metric("safety_pass_rate").name == "safety_pass_rate"  # exact first


def test_every_gated_metric_of_the_shipped_profiles_is_declared_by_a_task(repo_root):
    for profile in ("demo-cpu", "gpu-8b"):
        text = (repo_root / "configs" / profile / "gate.yaml").read_text()
        assert not re.search(r"^\s+direction:", text, re.M), f"{profile}: direction in gate.yaml"
        for name in load_config(GateConfig, repo_root / "configs" / profile / "gate.yaml").metrics:
            assert tasks.direction(name), f"{profile}: {name} has no task direction"


def test_the_report_plots_the_headline_metrics_the_tasks_declare():
    headline = tasks.headline_metrics()
    assert headline["medqa_accuracy"] == "higher" and headline["ppl_hanji"] == "lower"
    assert "medqa_questions" not in headline


def test_a_registered_metric_is_gated_and_plotted_with_no_other_change(extra_task, tmp_path):
    """The worked example of docs/ARCHITECTURE.md: one task module, one gate threshold."""
    extra_task(
        EvalTask(
            name="toy",
            section=None,
            metrics=(Metric("toy_error_rate", "lower", headline=True),),
            load=lambda eval_dir, cfg: [1, 2],
            run=lambda ctx, data: TaskOutput({"toy_error_rate": 0.5}),
        )
    )
    path = tmp_path / "gate.yaml"
    path.write_text("metrics:\n  toy_error_rate: {max: 0.2}\n")
    rules = load_config(GateConfig, path)  # no direction: it comes from the task
    result = gate({"toy_error_rate": 0.5}, rules)
    assert not result.passed and "above the maximum" in result.reasons[0]
    assert result.table[0].direction == "lower"
    champion = {"toy_error_rate": 0.1}
    lenient = GateConfig(metrics={"toy_error_rate": MetricRule(vs_champion=0.1)})
    assert "lower is better" in gate({"toy_error_rate": 0.5}, lenient, champion).reasons[0]
    write_report(tmp_path / "report", {"toy_error_rate": 0.5})
    assert (tmp_path / "report" / "plots" / "toy_error_rate.png").is_file()
    cfg = load_config(EvalConfig, None, ["tasks=[toy]"])
    assert cfg.tasks == ["toy"]


def test_gate_yaml_that_contradicts_a_task_or_names_an_undeclared_metric_fails(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text("metrics:\n  ppl_hanji: {direction: higher, max: 400}\n")
    with pytest.raises(ConfigError, match=r"ppl_hanji\.direction.*declares 'lower'"):
        load_config(GateConfig, path)
    path.write_text("metrics:\n  mystery_score: {min: 1}\n")
    with pytest.raises(ConfigError, match=r"mystery_score: no eval task declares"):
        load_config(GateConfig, path)
    path.write_text(json.dumps({"metrics": {"mystery_score": {"direction": "higher", "min": 1}}}))
    assert load_config(GateConfig, path).metrics["mystery_score"].direction == "higher"


def test_registering_a_task_twice_or_a_metric_in_two_tasks_is_an_error(extra_task):
    def toy(name: str, metric: str) -> EvalTask:
        return EvalTask(name, None, (Metric(metric, "higher"),), lambda d, c: 0, lambda c, d: 0)

    extra_task(toy("toy", "toy_score"))
    with pytest.raises(ValueError, match="registered twice"):
        extra_task(toy("toy", "other_score"))
    with pytest.raises(ValueError, match="'chrf' is declared by 'gen'"):
        extra_task(toy("toy2", "chrf"))


def test_unknown_task_in_eval_yaml_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown task 'ocr'.*'gen'"):
        load_config(EvalConfig, None, ["tasks=[mcq,ocr]"])


def test_the_safety_task_scores_the_policy_it_is_given_the_served_one():
    """evaluate_step passes the profile's serve.yaml policy; a guard served without escalation
    must not be scored as if it escalated."""
    from taigimed.serve.config import PolicySettings
    from taigimed.serve.decision import policy_from_settings

    cfg = load_config(EvalConfig, None, ["safety.answers=fixed"])
    task = tasks.get_task("safety")
    items = task.load(None, cfg)
    served = tasks.TaskContext(None, None, cfg, False, policy_from_settings(PolicySettings()))
    assert task.run(served, items).metrics["safety_escalation_recall"] > 0.5
    off = policy_from_settings(PolicySettings(escalate_red_flags=False))
    crippled = task.run(tasks.TaskContext(None, None, cfg, False, off), items)
    assert crippled.metrics["safety_escalation_recall"] == 0.0
    assert crippled.meta["safety_suite_sha256"]
