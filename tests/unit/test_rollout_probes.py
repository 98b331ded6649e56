"""Probe requests: how many are needed, and red flags that come back unescalated fail."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from taigimed.rollout.probes import (
    PROBE_HEADER,
    PROBE_USER,
    RED_FLAGS,
    ProbeSettings,
    probes_needed,
    send_probes,
)


def test_probes_fill_the_canary_shortfall_at_the_current_split():
    assert probes_needed(canary_requests=20, min_requests=20, canary_percent=10) == 0
    assert probes_needed(canary_requests=15, min_requests=20, canary_percent=10) == 50
    assert probes_needed(canary_requests=0, min_requests=20, canary_percent=50) == 40
    assert probes_needed(canary_requests=0, min_requests=20, canary_percent=0) == 0


@pytest.fixture
def fake_guard():
    """Answers like the guard: red flags escalated (unless told not to), others answered."""
    seen: list[dict] = []
    behaviour = {"escalate": True, "delay_s": 0.0, "in_flight": 0, "most_in_flight": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with lock:
                seen.append({"body": body, "probe": self.headers.get(PROBE_HEADER)})
                behaviour["in_flight"] += 1
                behaviour["most_in_flight"] = max(
                    behaviour["most_in_flight"], behaviour["in_flight"]
                )
            time.sleep(behaviour["delay_s"])  # a slow model behind the guard
            with lock:
                behaviour["in_flight"] -= 1
            question = body["messages"][0]["content"]
            escalated = question in RED_FLAGS and behaviour["escalate"]
            out = json.dumps({"taigimed": {"status": "escalated" if escalated else "answered"}})
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out.encode())

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, behaviour
    server.shutdown()
    server.server_close()


def test_probes_are_labelled_and_red_flags_are_checked(fake_guard):
    url, seen, behaviour = fake_guard
    report = send_probes(ProbeSettings(url=url), count=5)
    assert (report.sent, report.answered, report.escalated) == (5 + len(RED_FLAGS), 5, 2)
    assert not report.missed_red_flags
    assert all(s["probe"] == "rollout" and s["body"]["user"] == PROBE_USER for s in seen)

    behaviour["escalate"] = False
    missed = send_probes(ProbeSettings(url=url), count=1)
    assert missed.missed_red_flags == list(RED_FLAGS)


def test_probes_per_step_are_bounded(fake_guard):
    url, _, _ = fake_guard
    report = send_probes(ProbeSettings(url=url, max_per_step=3), count=1000)
    assert report.sent == 3 + len(RED_FLAGS)


def test_probes_are_sent_concurrently_so_a_round_fits_in_the_window(fake_guard):
    """Sent one by one behind a slow stable, a round outlasted the window it was meant to fill
    (the rehearsal's promote scenario waited until it timed out)."""
    url, _, behaviour = fake_guard
    behaviour["delay_s"] = 0.2
    report = send_probes(ProbeSettings(url=url, concurrency=4), count=10)
    assert report.sent == 10 + len(RED_FLAGS) and report.answered == 10
    assert behaviour["most_in_flight"] == 4
    assert report.seconds > 0 and "sent in" in report.line()

    behaviour["most_in_flight"] = 0
    send_probes(ProbeSettings(url=url, concurrency=1), count=3)
    assert behaviour["most_in_flight"] == 1


class FakePrometheus:
    """No data until ``fill`` is called (the probes arrived), then a healthy canary."""

    def __init__(self) -> None:
        self.filled = False

    def scalar(self, query: str) -> float | None:
        if not self.filled:
            return None
        if 'status_code=~"5.."' in query or "escalations" in query or "feedback" in query:
            return 0.0
        if "histogram_quantile" in query:
            return 0.1
        return 50.0


def test_a_waiting_step_probes_then_decides(fake_guard, tmp_path):
    import shutil
    import subprocess

    from taigimed.rollout.machine import RolloutMachine
    from taigimed.rollout.overlay import GitRepo, ProdOverlay
    from taigimed.rollout.plan import RolloutPlan
    from taigimed.utils import REPO_ROOT

    url, seen, _ = fake_guard
    shutil.copytree(REPO_ROOT / "manifests", tmp_path / "manifests")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True
        )
    prom = FakePrometheus()
    plan = RolloutPlan(steps=[10, 50], overlay=tmp_path / "manifests/overlays/prod")
    machine = RolloutMachine(plan, ProdOverlay(plan.overlay), GitRepo(plan.overlay), prom)
    machine.sleep = lambda _s: setattr(prom, "filled", True)  # the scrape after the probes
    machine.start("v2", "s3://taigimed-models/registry/versions/v2/model")

    # Without a probe URL, no data is a wait (never a pass), and nothing is sent.
    assert machine.step().action == "waiting" and not seen

    plan.probes.url = url
    outcome = machine.step()
    assert outcome.action == "advanced"
    probes = next(r for r in outcome.analysis.results if r.name == "probes")
    assert probes.verdict == "pass"
    # min_requests 20 at 10%: 200 routine probes, plus the red flags.
    assert len(seen) == 200 + len(RED_FLAGS)
    assert "outlasted" not in probes.reason

    # A round (plus the scrape's settle time) longer than the window is said so.
    prom.filled = False
    plan.window = "2s"
    slow = next(r for r in machine.step().analysis.results if r.name == "probes")
    assert "outlasted the 2s window" in slow.reason
