"""Shared pieces of the peer benchmarks (``bench/*_vs_*.py``, ``bench/decode_roofline.py``).

Not a benchmark itself: ``make bench`` skips files whose name starts with ``_``. The peers run
in ``.venv-bench`` (``make bench-env``), where taigimed is installed too, so both arms of a
comparison use the same torch, transformers and peft.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# One torch thread unless BENCH_THREADS says otherwise: on the shared 2-core machine two OpenMP
# threads thrash whenever another process holds a core (each waits at every barrier for the
# other), which made both arms several times slower and noisier. Set before torch is imported,
# and inherited by each arm's process; both arms of every comparison run with the same count.
THREADS = os.environ.setdefault("BENCH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", THREADS)
os.environ.setdefault("MKL_NUM_THREADS", THREADS)

import torch  # noqa: E402

torch.set_num_threads(int(THREADS))

from taigimed.utils import REPO_ROOT, git_commit  # noqa: E402

BENCH_VENV = REPO_ROOT / ".venv-bench"
RESULTS = REPO_ROOT / "bench" / "results"
# ../shared beside the main checkout, or beside the folder of worktrees (/work/wt/NAME).
SHARED_MEDQA_DEV = next(
    (
        p
        for p in (d / "shared" / "data" / "medqa_tw" / "dev.jsonl" for d in REPO_ROOT.parents)
        if p.is_file()
    ),
    REPO_ROOT.parent / "shared" / "data" / "medqa_tw" / "dev.jsonl",
)
DEMO_MEDQA = REPO_ROOT / "data" / "demo" / "medqa_demo.jsonl"


class LoadSampler:
    """Samples the 1-minute load average every few seconds while a benchmark runs.

    The machine is shared, so absolute timings move with other people's work; the load during
    the run is written beside the figures so a reader can tell a quiet run from a busy one.
    """

    def __init__(self, every_s: float = 3.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every_s)

    def __enter__(self) -> LoadSampler:
        self.started = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, Any]:
        s = self.samples or [os.getloadavg()[0]]
        return {
            "load_avg_1min_mean": round(sum(s) / len(s), 2),
            "load_avg_1min_min": round(min(s), 2),
            "load_avg_1min_max": round(max(s), 2),
            "samples": len(s),
            "cpu_count": os.cpu_count(),
        }


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_arm(script: Path, arm: str, extra: list[str], python: str | None = None) -> dict[str, Any]:
    """Run one arm in a fresh process (so its peak RSS is its own) and return its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    cmd = [python or sys.executable, str(script), "--arm", arm, "--arm-out", str(out), *extra]
    started = time.time()
    subprocess.run(cmd, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    result["process_wall_s"] = round(time.time() - started, 1)
    return result


def environment() -> dict[str, Any]:
    """Versions and the commit the figures belong to."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for name in ("peft", "trl", "lm_eval", "datasets"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except ImportError:
            pass
    return info


def demo_data(data_dir: Path | None) -> Path:
    """Use a prepared data dir, or prepare the demo data into a temporary one."""
    if data_dir is not None:
        return data_dir
    from taigimed.config import load_config
    from taigimed.data.config import DataConfig
    from taigimed.data.prepare import prepare

    out = Path(tempfile.mkdtemp(prefix="taigimed-bench-")) / "data"
    prepare(load_config(DataConfig, REPO_ROOT / "configs/demo-cpu/data.yaml"), out)
    return out


def missing_module_line(module: str, bench: str) -> str | None:
    """The skip line for a benchmark whose peer is not installed in this interpreter."""
    try:
        __import__(module)
    except ImportError:
        return (
            f"SKIP {bench}: {module} is not installed in {sys.executable}; "
            "build the bench venv with `make bench-env` (or `make bench BENCH_INSTALL=1`)"
        )
    return None
