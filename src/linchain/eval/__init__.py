"""Evaluation with the paper's protocol (LLM-Adapters): answer rules, two scorers, results files.

The pipeline behind ``linchain eval`` is :func:`run_evaluation` (``EvalArguments`` in, results out).
Quick use from Python (e.g. a before/after check in a training run)::

    from linchain.eval import loglik_accuracy
    acc = loglik_accuracy(model, tokenizer, examples, "boolq", batch_size=8)
"""

from .args import EvalArguments
from .examples import build_prompt, candidate_answers, continuation, gold_answer, load_eval_examples
from .extract import extract_answer, is_correct, response_text
from .generate import GeneratePrediction, generate_predict, generate_texts
from .loglik import (
    LoglikPrediction,
    continuation_logprobs,
    loglik_accuracy,
    loglik_predict,
    shared_prompt_logprobs,
    shared_prompts_logprobs,
)
from .results import TaskResult, format_table, results_dict, write_results
from .run import EvalRun, run_evaluation
from .scoring import SCORERS, evaluate_task
from .tasks import TASKS, TaskSpec, get_task, infer_task

__all__ = [
    "EvalArguments",
    "EvalRun",
    "GeneratePrediction",
    "LoglikPrediction",
    "SCORERS",
    "TASKS",
    "TaskResult",
    "TaskSpec",
    "build_prompt",
    "candidate_answers",
    "continuation",
    "continuation_logprobs",
    "evaluate_task",
    "extract_answer",
    "format_table",
    "generate_predict",
    "generate_texts",
    "get_task",
    "gold_answer",
    "infer_task",
    "is_correct",
    "load_eval_examples",
    "loglik_accuracy",
    "loglik_predict",
    "response_text",
    "results_dict",
    "run_evaluation",
    "shared_prompt_logprobs",
    "shared_prompts_logprobs",
    "write_results",
]
