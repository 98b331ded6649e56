from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Markdown, Output

from components.image import TAIGIMED_IMAGE


@dsl.component(base_image=TAIGIMED_IMAGE)
def gate(
    profile: str,
    overrides: str,
    results: Input[Artifact],
    verdict: Output[Artifact],
    report: Output[Markdown],
) -> NamedTuple("GateOutputs", [("passed", bool), ("reasons", str)]):
    """Compare the candidate with thresholds, the champion and the base model.

    Args:
        profile: config folder (uses its gate.yaml).
        overrides: space-separated key=value overrides for gate.yaml (e.g. thresholds).
        results: the evaluate step's output.
        verdict: gate.json with pass/fail, every reason and the metric table.
        report: the verdict as Markdown.
    Returns:
        passed, and the reasons joined by newlines (empty when it passed).
    """
    import shutil
    from collections import namedtuple
    from pathlib import Path

    from taigimed.pipeline.steps import gate_step

    passed, reasons = gate_step(profile, results.path, overrides, verdict.path)
    shutil.copyfile(Path(verdict.path) / "gate.md", report.path)
    return namedtuple("GateOutputs", ["passed", "reasons"])(passed, "\n".join(reasons))


@dsl.component(base_image=TAIGIMED_IMAGE)
def mark_rejected(reasons: str, report: Output[Markdown]) -> str:
    """End a run whose candidate failed the gate: not an error, but visibly rejected.

    Args:
        reasons: the gate's reasons, one per line.
        report: REJECTED.md with the reasons.
    Returns:
        the rejection text.
    """
    import shutil
    from pathlib import Path

    from taigimed.pipeline.steps import record_rejection

    folder = Path(report.path).parent / "rejection"
    text = record_rejection(reasons.splitlines(), str(folder))
    shutil.copyfile(folder / "REJECTED.md", report.path)
    return text
