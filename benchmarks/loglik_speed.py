"""Log-likelihood scoring speed: rows batched through one key/value cache vs one row per pass.

Scores the same rows of SmolLM2-135M-Instruct (the offline model) on the cpu-study's closed task
(reasoning-gym family_relationships test rows; every row's candidates are the data's distinct
answers) or on an LLM-Adapters multiple-choice file, with `loglik_predict(share_prompt=True)`:

- baseline: ``batch_size`` = one row's candidates, so each pass holds one row (the scorer before
  rows were batched: one prompt pass and one candidate pass per row);
- batched: ``--batch_size`` (prompt, candidate) pairs per pass, several rows per prompt pass.

Rounds alternate the two (these machines are noisy); it prints the median time per row, the ratio
batched / baseline, and that the two give the same predictions and scores (max |difference|):

    python benchmarks/loglik_speed.py                       # 40 rows, CPU, float32
    python benchmarks/loglik_speed.py --rows 300 --device cuda --dtype bfloat16 --batch_size 512
    python benchmarks/loglik_speed.py --data ../shared/data/llm-adapters/dataset/ARC-Challenge/test.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from linchain.eval.examples import candidate_answers, load_eval_examples
from linchain.eval.loglik import loglik_predict
from linchain.eval.run import closed_set
from linchain.eval.tasks import CLOSED_TASK, get_task, infer_task
from linchain.loading import load_causal_lm
from linchain.offline import smollm2_path

STUDY_TEST = "reasoning_gym:family_relationships:600:100000"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", default=STUDY_TEST, help="eval data spec (default: the cpu-study's test rows, closed task)"
    )
    ap.add_argument("--rows", type=int, default=40)
    ap.add_argument("--batch_size", type=int, default=128, help="(prompt, candidate) pairs per pass, batched run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    model, tok = load_causal_lm(smollm2_path(), dtype=args.dtype, device=args.device)
    if args.data == STUDY_TEST:
        task = CLOSED_TASK
        examples = closed_set(args.data, load_eval_examples(args.data))[: args.rows]
    else:
        task = get_task(infer_task(args.data) or "boolq")  # a path names its task; else a two-way choice
        examples = load_eval_examples(args.data, limit=args.rows)
    n = max(len(candidate_answers(task, e)) for e in examples)
    print(
        f"{torch.__version__}, {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else f'{torch.get_num_threads()} threads'}), "
        f"{args.dtype}; {len(examples)} rows of {args.data}, up to {n} candidates a row"
    )

    def score(batch_size):
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        preds = loglik_predict(
            model, tok, examples, task, batch_size=batch_size, append_choices=task is not CLOSED_TASK
        )
        if args.device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / len(examples), preds

    score(args.batch_size)  # warm-up
    times = {"one row a pass": [], "batched": []}
    for _ in range(args.rounds):
        t, base = score(n)
        times["one row a pass"].append(t)
        t, batched = score(args.batch_size)
        times["batched"].append(t)
    same = sum(a.pred == b.pred for a, b in zip(base, batched))
    diff = max(abs(x - y) for a, b in zip(base, batched) for x, y in zip(a.scores, b.scores))
    base_t, new_t = statistics.median(times["one row a pass"]), statistics.median(times["batched"])
    print(f"one row a pass (batch_size {n}): {base_t * 1000:.1f} ms/row")
    print(f"batched (batch_size {args.batch_size}): {new_t * 1000:.1f} ms/row  ratio {new_t / base_t:.2f}x")
    print(
        f"same prediction on {same}/{len(examples)} rows; max |score difference| {diff:.2e}; "
        f"accuracy {sum(p.correct for p in batched) / len(batched):.3f}"
    )


if __name__ == "__main__":
    main()
