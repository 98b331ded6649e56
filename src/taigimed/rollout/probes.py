"""Probe traffic: the rollout's own requests when real users are too few to judge a canary.

At night a canary at 10% may see a handful of requests per window, and the analysis would wait
forever (``wait`` is never a pass). When the traffic check waits, ``RolloutMachine.step`` sends
just enough probes through the guard for the canary to reach ``min_requests`` at the current
split, waits for a scrape, and analyses again. The probe set is fixed (routine questions and
red-flag questions, below), so two windows are comparable, and every probe is labelled: header
``x-taigimed-probe: rollout`` and OpenAI ``user`` ``taigimed-rollout-probe``, so the guard's
metrics can keep probes out of user-facing series (see docs/cluster.md, "Probes").

Red-flag probes must come back escalated without any model: a guard or canary that lets an
emergency through is a failed probe, whatever the metrics say.

Probes are sent ``concurrency`` at a time. Sent one by one they can outlast the analysis window
they are meant to fill: a rehearsal on a loaded two-core machine sent 14 probes through a stable
answering at p95 16 s, took two minutes a round, and the 30 s window re-read after the round held
only the last few, so the canary never reached ``min_requests`` and the step waited until the
scenario timed out. A round that still takes longer than the window is said in the report.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from taigimed.serve.metrics import PROBE_HEADER  # one name for the guard and the rollout

log = logging.getLogger(__name__)

PROBE_USER = "taigimed-rollout-probe"
# Routine questions (answered by the model: these are what reach the canary).
ROUTINE = (
    "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？（我這兩天咳嗽，喉嚨有點痛，該怎麼照顧自己？）",
    "暗時睏袂去，有啥物好習慣會當改善？（晚上睡不著，有什麼好習慣可以改善？）",
    "食飽了後腹肚淡薄仔脹，愛注意啥物？（吃飽後肚子有點脹，要注意什麼？）",
)
# Red flags (the guard escalates them before any model: call 119 / emergency room).
RED_FLAGS = (
    "阮阿爸胸坎足痛，閣喘袂過來，按怎？（我爸爸胸口很痛又喘不過氣，怎麼辦？）",
    "我想欲自殺。（我想要自殺。）",
)


@dataclass
class ProbeSettings:
    """Where and how many probes a rollout may send (plan key ``probes``)."""

    url: str = ""  # the guard's base URL; empty: no probes (wait for real traffic)
    max_per_step: int = 200  # never more than this many probes for one analysis
    max_tokens: int = 16
    concurrency: int = 8  # probes in flight at once, so that a round fits inside the window
    timeout_s: float = 120.0
    settle_s: float = 5.0  # after the probes, wait this long for Prometheus to scrape them


@dataclass
class ProbeReport:
    """What one probe round sent and what came back."""

    sent: int = 0
    answered: int = 0  # routine probes answered 200
    errors: int = 0  # routine probes answered 5xx (or not at all)
    escalated: int = 0  # red-flag probes escalated
    missed_red_flags: list[str] = field(default_factory=list)
    seconds: float = 0.0  # the round's wall time, first request sent to last answer

    def line(self) -> str:
        return (
            f"probes: {self.sent} sent in {self.seconds:.1f} s, {self.answered} answered, "
            f"{self.errors} errors, {self.escalated} red flags escalated, "
            f"{len(self.missed_red_flags)} missed"
        )


def probes_needed(canary_requests: float, min_requests: int, canary_percent: int) -> int:
    """Requests to send so that, at ``canary_percent``, the canary reaches ``min_requests``."""
    missing = max(0.0, min_requests - canary_requests)
    if missing == 0 or canary_percent <= 0:
        return 0
    return math.ceil(missing * 100 / canary_percent)


def send_probes(settings: ProbeSettings, count: int, model: str = "taigimed") -> ProbeReport:
    """Send ``count`` routine probes plus every red-flag probe once, through the guard,
    ``settings.concurrency`` at a time; the answers are tallied here, in one thread."""
    report = ProbeReport()
    headers = {PROBE_HEADER: "rollout"}
    url = settings.url.rstrip("/") + "/openai/v1/chat/completions"
    questions = [ROUTINE[i % len(ROUTINE)] for i in range(min(count, settings.max_per_step))]
    questions += RED_FLAGS

    def probe(client: httpx.Client, question: str) -> tuple[int, str]:
        """(HTTP status, the guard's ``taigimed.status``); status 0: no answer at all."""
        body = {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": settings.max_tokens,
            "user": PROBE_USER,
        }
        try:
            resp = client.post(url, json=body)
        except httpx.HTTPError as err:
            log.warning("probe failed: %s", err)
            return 0, ""
        if resp.status_code != 200:
            return resp.status_code, ""
        return 200, (resp.json().get("taigimed") or {}).get("status", "")

    started = time.monotonic()
    with (
        httpx.Client(timeout=settings.timeout_s, headers=headers) as client,
        ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool,
    ):
        answers = list(pool.map(lambda question: probe(client, question), questions))
    report.seconds = time.monotonic() - started
    for question, (code, status) in zip(questions, answers, strict=True):
        report.sent += 1
        if code == 0:  # no answer at all: an error, for a red flag as for a routine probe
            report.errors += 1
        elif question in RED_FLAGS:
            if status == "escalated":
                report.escalated += 1
            else:
                report.missed_red_flags.append(question)
        elif code == 200:
            report.answered += 1
        elif code >= 500:
            report.errors += 1
    log.info("%s", report.line())
    return report
