"""Batch-1 greedy decode tokens/s of vLLM's CPU runtime (run by bench/decode_roofline.py).

Runs inside the vLLM venv (``.venv-vllm``), which has no taigimed: standalone on purpose.
Decode rate = extra tokens / extra seconds between a 1-token and an N-token generation of the
same prompt, so the prefill and the engine's per-request overhead cancel out. One JSON line
on stdout: ``{"float32": {"tokens_per_s": ...}, "bfloat16": {...}}`` (or an ``error``).
"""

from __future__ import annotations

import argparse
import gc
import json
import time

PROMPT = "我這兩工頭殼痛閣有淡薄仔發燒，愛注意啥物？"


def rate(llm, sampling_cls, prompt: str, tokens: int, repeats: int = 2) -> float:
    def timed(n: int) -> float:
        params = sampling_cls(max_tokens=n, temperature=0.0, ignore_eos=True)
        started = time.perf_counter()
        llm.generate([prompt], params, use_tqdm=False)
        return time.perf_counter() - started

    timed(2)  # warm-up
    best = 0.0
    for _ in range(repeats):
        short, long = timed(1), timed(tokens)
        best = max(best, (tokens - 1) / max(long - short, 1e-9))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    args = parser.parse_args()
    import vllm
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    out = {"vllm": vllm.__version__}
    for dtype in args.dtypes:
        started = time.perf_counter()
        try:
            llm = LLM(model=args.model_dir, dtype=dtype, max_model_len=1024, max_num_seqs=1)
        except Exception as err:  # a dtype this build does not support: say so, go on
            out[dtype] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            continue
        load_s = time.perf_counter() - started
        out[dtype] = {
            "tokens_per_s": round(rate(llm, SamplingParams, prompt, args.tokens), 2),
            "engine_start_s": round(load_s, 1),
        }
        del llm
        gc.collect()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
