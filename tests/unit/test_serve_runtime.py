"""The vLLM runtime's env on a CPU host: bfloat16 only where the CPU computes it natively."""

from __future__ import annotations

from pathlib import Path

from taigimed.serve.runtime import cpu_env, cpu_has_bf16, runtime_command
from taigimed.utils import REPO_ROOT

MANIFEST = REPO_ROOT / "manifests/base/servingruntime-vllm.yaml"
AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\nprocessor\t: 1\nflags\t\t: avx2\n"
WITH_BF16 = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile\n"


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_an_avx2_only_cpu_serves_in_float32(tmp_path):
    info = cpuinfo(tmp_path, AVX2_ONLY)
    assert not cpu_has_bf16(info)
    assert cpu_env(info)["DTYPE"] == "float32"


def test_a_bf16_cpu_or_an_unreadable_one_keeps_the_manifests_dtype(tmp_path):
    assert cpu_has_bf16(cpuinfo(tmp_path, WITH_BF16))
    assert "DTYPE" not in cpu_env(cpuinfo(tmp_path, WITH_BF16))
    assert "DTYPE" not in cpu_env(tmp_path / "absent")


def test_the_override_reaches_the_runtimes_own_command(tmp_path):
    """Only the env value changes: the command still reads --dtype from ${DTYPE}."""
    env = cpu_env(cpuinfo(tmp_path, AVX2_ONLY))
    cmd = runtime_command(MANIFEST, tmp_path / "model", 8123, "v1", "python3", tmp_path, env)
    assert cmd.env["DTYPE"] == "float32"
    assert '--dtype "${DTYPE}"' in cmd.argv[-1]
    plain = runtime_command(MANIFEST, tmp_path / "model", 8123, "v1", "python3", tmp_path)
    assert plain.env["DTYPE"] == "bfloat16"
