"""Evaluation with the paper's protocol (LLM-Adapters): answer rules, two scorers, results files.

Quick use from Python (e.g. a before/after check in a training run)::

    from linchain.eval import loglik_accuracy
    acc = loglik_accuracy(model, tokenizer, examples, "boolq", batch_size=8)
"""

from .examples import candidate_answers, continuation, gold_answer, load_eval_examples
from .extract import extract_answer, is_correct, response_text
from .generate import GeneratePrediction, generate_predict, generate_texts
from .loglik import LoglikPrediction, continuation_logprobs, loglik_accuracy, loglik_predict
from .tasks import TASKS, TaskSpec, get_task, infer_task

__all__ = [
    "GeneratePrediction",
    "LoglikPrediction",
    "TASKS",
    "TaskSpec",
    "candidate_answers",
    "continuation",
    "continuation_logprobs",
    "extract_answer",
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
]
