"""Fine-tuning and evaluating encoder sequence classifiers with LinChain (the paper's GLUE path).

:func:`train_seq_cls` runs `linchain train`'s Trainer (checkpoints, --resume, metrics.jsonl, Ctrl-C, a stop
on a non-finite loss: :mod:`linchain.train.engine`) around a PEFT model built from
``LinChainConfig(task_type="SEQ_CLS", modules_to_save=["classifier"])``: the chain adapts the
chosen linear layers, and the freshly initialised classification head is trained in full.
:func:`evaluate_seq_cls` scores any classifier (base, adapter, merged) with the GLUE metrics.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .. import runs
from ..io import atomic_write_json, atomic_write_text, strict_json
from ..outputs import OutputFolder
from ..resolve import find_adapter_dir, refuse_other_task, resolve_model_path, tokenizer_source
from ..threads import set_threads
from ..train.args import ADAPTER_FIELDS
from .args import NLUArguments
from .data import SeqClsData, check_training_classes, load_seq_cls
from .metrics import compute_metrics

__all__ = ["LABELS_FILE", "evaluate_seq_cls", "run_seq_cls", "summary_lines", "train_seq_cls"]

logger = logging.getLogger("linchain.nlu")

#: label names and task of a seq_cls adapter, saved next to adapter_config.json
LABELS_FILE = "seq_cls.json"


def _encode(tokenizer: Any, data: SeqClsData, max_length: int) -> List[Dict[str, Any]]:
    columns = list(zip(*data.texts))
    enc = tokenizer(*columns, truncation=True, max_length=max_length)
    dtype = torch.float if data.regression else torch.long
    return [
        {**{k: enc[k][i] for k in enc}, "labels": torch.tensor(data.labels[i], dtype=dtype)} for i in range(len(data))
    ]


@torch.no_grad()
def evaluate_seq_cls(
    model: torch.nn.Module,
    tokenizer: Any,
    data: SeqClsData,
    glue_task: Optional[str] = None,
    batch_size: int = 32,
    max_length: int = 128,
) -> Tuple[Dict[str, float], List[Dict[str, Any]]]:
    """``(metrics, predictions)``: GLUE metrics of ``glue_task`` (or accuracy/F1/Matthews) and one
    record per row (texts, gold, predicted label). Logits are [batch, num_labels]."""
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    features = _encode(tokenizer, data, max_length)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds: List = []
    try:
        for start in range(0, len(features), batch_size):
            batch = collate(features[start : start + batch_size])
            batch.pop("labels")
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            bad = (~torch.isfinite(logits)).any(-1).nonzero()
            if len(bad):  # argmax of NaN is 0: a metric computed from it would read as a result
                raise ValueError(
                    f"{data.source} row {start + int(bad[0])}: the model's logits are not finite "
                    "(the adapter's weights overflow); no metrics written"
                )
            preds += logits[:, 0].tolist() if data.regression else logits.argmax(-1).tolist()
    finally:
        model.train(was_training)
    metrics = compute_metrics(glue_task or data.source, preds, data.labels, num_labels=len(data.label_names))
    records = [
        {
            "row": i,
            "text": list(t),
            "gold": (g if data.regression else data.label_names[g]),
            "pred": (p if data.regression else data.label_names[p]),
            "correct": None if data.regression else p == g,
        }
        for i, (t, g, p) in enumerate(zip(data.texts, data.labels, preds))
    ]
    return metrics, records


def _load_data(args: NLUArguments) -> Tuple[Optional[SeqClsData], SeqClsData]:
    columns = args.text_column_list()
    train = None
    if args.do_train:
        train = load_seq_cls(args.data, args.train_split, columns, args.label_column, args.eval_fraction, args.seed)
    if args.eval_data:
        evaluation = load_seq_cls(
            args.eval_data,
            "all" if not args.eval_data.startswith("hf:") else args.eval_split,
            columns,
            args.label_column,
            args.eval_fraction,
            args.seed,
        )
    else:
        evaluation = load_seq_cls(args.data, args.eval_split, columns, args.label_column, args.eval_fraction, args.seed)
    if train is not None:  # the rows' classes, before --limit_train/--limit_eval cut them
        for note in check_training_classes(f"--data {args.data}", train, evaluation):
            print(f"linchain train: {note}", file=sys.stderr, flush=True)
    if train is not None and args.limit_train:
        train = train.take(range(min(args.limit_train, len(train))))
    if args.limit_eval:
        evaluation = evaluation.take(range(min(args.limit_eval, len(evaluation))))
    if train is not None and train.label_names != evaluation.label_names:
        evaluation = in_training_labels(evaluation, train.label_names, train.regression)
    return train, evaluation


def in_training_labels(evaluation: SeqClsData, label_names: List[str], regression: bool) -> SeqClsData:
    """``evaluation`` with its class ids renumbered into the training labels ``label_names``: a small
    evaluation set may lack a class (its label names are then a subset), which is no reason to refuse it.
    A label training never saw, or regression on one side only, is refused."""
    if evaluation.label_names == label_names and evaluation.regression == regression:
        return evaluation
    unseen = sorted(set(evaluation.label_names) - set(label_names))
    if regression != evaluation.regression or unseen:
        raise ValueError(
            f"evaluation labels {evaluation.label_names} are not among the training labels {label_names}"
            + (f" ({unseen} never occur in training)" if unseen and not regression else "")
        )
    index = {name: k for k, name in enumerate(label_names)}
    ids = [index[name] for name in evaluation.label_names]
    return SeqClsData(evaluation.source, evaluation.texts, [ids[y] for y in evaluation.labels], list(label_names))


def load_classifier(path: str, data: SeqClsData):
    """The encoder at ``path`` with a classification head for ``data``'s labels (one output for regression)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=1 if data.regression else len(data.label_names),
        problem_type="regression" if data.regression else "single_label_classification",
        # a classifier checkpoint with another label count (MNLI's 3 for a 2-label task) gets a new head,
        # which training learns (modules_to_save) and an evaluated adapter replaces with its own
        ignore_mismatched_sizes=True,
    )


def _build_model(args: NLUArguments, train: SeqClsData):
    """(the classifier wrapped for the method, tokenizer)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)  # the head and the chain are initialised from this seed
    model = load_classifier(path, train)
    # the chain adapts the chosen layers; the freshly initialised classification head trains in full
    return args.wrap(model, "SEQ_CLS", modules_to_save=["classifier"]), tokenizer


def _training_args(args: NLUArguments):
    """The HF TrainingArguments of a seq_cls run: a checkpoint every --save_steps and at the last step
    (the newest two kept, for --resume), the loss logged every --logging_steps."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=args.output_dir,
        learning_rate=args.learning_rate,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        seed=args.seed,
        data_seed=args.seed,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        report_to=[],
        logging_steps=args.logging_steps,
        include_num_input_tokens_seen="non_padding",  # for tokens/s in the log
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )


def train_seq_cls(
    args: NLUArguments,
    callbacks: Sequence[Any] = (),
    folder: Optional[OutputFolder] = None,
    resume_from: Optional[Path] = None,
    data: Optional[Tuple[SeqClsData, SeqClsData]] = None,
) -> Dict[str, Any]:
    """Fine-tune with linchain's Trainer (metrics.jsonl, checkpoints, Ctrl-C that saves, a stop on a non-finite
    loss or weight; resumed from ``resume_from`` when given), save the adapter (+ tokenizer, label names) in
    ``args.output_dir``, evaluate, and write ``results.json`` / ``predictions.jsonl``. Returns the results
    dict; after a Ctrl-C, ``{"interrupted": True, "steps": N, "output_dir": ...}`` (with ``folder``: raised
    through it, so it is marked interrupted). ``data``: (training, evaluation) rows already loaded (default:
    loaded here)."""
    from transformers import DataCollatorWithPadding

    from ..train.engine import StopOnInterrupt, make_trainer, stop_cleanly, train_or_finish

    if not args.do_train:
        raise ValueError("train_seq_cls needs do_train=True")
    train, evaluation = data if data is not None else _load_data(args)
    model, tokenizer = _build_model(args, train)
    trainable, total = model.get_nb_trainable_parameters()
    interrupt = StopOnInterrupt()
    features = _encode(tokenizer, train, args.max_length)
    collator = DataCollatorWithPadding(tokenizer)
    trainer = make_trainer(model, _training_args(args), features, None, collator, folder, interrupt, callbacks)
    trainer.settings = run_settings(args)  # in every checkpoint: --resume compares against it
    train_loss, seconds = train_or_finish(trainer, interrupt, resume_from)
    steps = trainer.state.global_step
    if interrupt.requested:
        stopped = {"interrupted": True, "steps": steps, "output_dir": args.output_dir}
        return stop_cleanly(stopped, steps, mark_folder=folder is not None)
    _save(trainer.model, tokenizer, train, args)
    metrics, records = evaluate_seq_cls(
        trainer.model, tokenizer, evaluation, args.glue_task, args.per_device_eval_batch_size, args.max_length
    )
    extra = {
        "train_rows": len(train),
        "train_loss": train_loss,
        "train_seconds": seconds,
        "steps": steps,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    return _write(args, metrics, records, evaluation, extra)


def _save(model, tokenizer, train: SeqClsData, args: NLUArguments) -> None:
    """The adapter, tokenizer and label names (seq_cls.json) at the top of --output_dir."""
    out = Path(args.output_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    atomic_write_json(
        out / LABELS_FILE,
        {
            "label_names": train.label_names,
            "regression": train.regression,
            "glue_task": args.glue_task,
            "base_model": args.model_name_or_path,
        },
    )


#: how a run is launched, evaluated, logged or checkpointed, not what it trains: --resume may change them
NOT_DEFINING = frozenset(
    {
        "output_dir",
        "overwrite",
        "resume",
        "do_train",
        "adapter",
        "num_threads",
        "save_steps",
        "logging_steps",
        "per_device_eval_batch_size",
        "eval_data",
        "eval_split",
        "limit_eval",
        "glue_task",
    }
)


def run_settings(args: NLUArguments) -> Dict[str, Any]:
    """The run's settings as JSON values (what each checkpoint records)."""
    return json.loads(json.dumps({k: v for k, v in vars(args).items() if not k.startswith("_")}))


def _check_resume(args: NLUArguments, checkpoint: Path) -> None:
    """Refuse a --resume whose defining settings differ from those ``checkpoint`` recorded (as train's
    check_resume does with train_config.yaml)."""
    from ..train.engine import SETTINGS_FILE, _say, refuse_changed_settings

    try:
        saved = json.loads((checkpoint / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        _say(f"--resume: {checkpoint} has no {SETTINGS_FILE}: its settings cannot be compared with these")
        return
    refuse_changed_settings(Path(args.output_dir), saved, run_settings(args), NOT_DEFINING)


def _write(
    args: NLUArguments,
    metrics: Dict[str, float],
    records: List[Dict[str, Any]],
    evaluation: SeqClsData,
    extra: Dict[str, Any],
    into: Optional[Path] = None,
) -> Dict[str, Any]:
    """results.json and predictions.jsonl into ``into`` (default: --output_dir; the evaluation
    writes into the temporary folder that becomes its output whole)."""
    out = Path(args.output_dir)
    result = {
        "task_type": "seq_cls",
        "model": args.model_name_or_path,
        "adapter": args.adapter or (str(out) if args.do_train else None),
        "data": args.data,
        "eval_data": args.eval_data or args.data,
        "glue_task": args.glue_task,
        "eval_rows": len(evaluation),
        "label_names": evaluation.label_names,
        "metrics": metrics,
        # an evaluation's adapter settings are the adapter's own (adapter_config.json), not the flags' defaults
        "settings": {
            k: v for k, v in vars(args).items() if not k.startswith("_") and (args.do_train or k not in ADAPTER_FIELDS)
        },
        **extra,
    }
    into = into or out
    atomic_write_text(into / "predictions.jsonl", "".join(strict_json(r) + "\n" for r in records))
    atomic_write_json(into / "results.json", result)
    return result


def _inputs(args: NLUArguments, adapter: Optional[Path] = None) -> Dict[str, Optional[str]]:
    """What the command reads (local paths; OutputFolder skips the rest): never its output."""
    inputs = {
        "the base model (--model_name_or_path)": args.model_name_or_path,
        "the data (--data)": args.data,
        "the evaluation data (--eval_data)": args.eval_data,
    }
    if adapter is not None:
        inputs["the adapter being evaluated (--adapter)"] = str(adapter)
    return inputs


def _train_into_folder(args: NLUArguments, callbacks: Sequence[Any] = ()) -> Dict[str, Any]:
    """Train through OutputFolder (kind ``seq-cls``): checked before any model loads, locked for the
    whole run, marked writing/complete/failed/interrupted; --overwrite clears the previous run first;
    --resume continues from the newest complete checkpoint, refused before the lock when the settings changed."""
    from ..train.engine import _CleanStop, _say, resume_point

    folder = OutputFolder(
        args.output_dir,
        "seq-cls",
        flag="--output_dir",
        overwrite=args.overwrite,
        resume=args.resume,
        inputs=_inputs(args),
        command="linchain train",
    )
    resume_from = None
    if args.resume:
        resume_from = resume_point(folder, say=_say)
        _check_resume(args, resume_from)
    with folder.locked():
        folder.check()
        set_threads(args.num_threads, "linchain seq_cls")
        # the data loaded and checked before anything is written: a bad --data leaves the folder, and the
        # previous run --overwrite would replace, as they were (break-it check)
        data = _load_data(args)
        try:
            # --overwrite clears the previous run first; a new folder that got no adapter or checkpoint is left
            # as found
            with folder.writing(saved=("adapter_config.json", runs.CHECKPOINTS)):
                return train_seq_cls(args, callbacks, folder, resume_from, data)
        except _CleanStop as stop:  # Ctrl-C: checkpoint saved, the folder marked "interrupted"
            return stop.result


def run_seq_cls(args: NLUArguments, callbacks: Sequence[Any] = ()) -> Dict[str, Any]:
    """Train then evaluate (``do_train``; ``callbacks``: extra TrainerCallbacks), or evaluate a base
    classifier or a saved adapter."""
    if args.do_train:
        return _train_into_folder(args, callbacks)
    from transformers import AutoTokenizer

    adapter = find_adapter_dir(args.adapter) if args.adapter else None
    # results.json + predictions.jsonl appear together (built beside, swapped in whole), never over an input
    folder = OutputFolder(
        args.output_dir,
        "eval",
        flag="--output_dir",
        overwrite=args.overwrite,
        inputs=_inputs(args, adapter),
        command="linchain eval",
    ).check()
    set_threads(args.num_threads, "linchain seq_cls")
    path = resolve_model_path(args.model_name_or_path)
    _, evaluation = _load_data(args)
    if adapter:
        refuse_other_task(adapter, "SEQ_CLS", "--task_type seq_cls")
        saved = json.loads((adapter / LABELS_FILE).read_text()) if (adapter / LABELS_FILE).exists() else {}
        if saved:  # scored in the adapter's labels (its head has one output per training label)
            try:
                evaluation = in_training_labels(evaluation, saved["label_names"], bool(saved.get("regression")))
            except ValueError as err:
                raise ValueError(f"adapter {args.adapter}: {err}") from None
    model = load_classifier(path, evaluation)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(adapter, path))
    if adapter:
        from ..tuner.saved import load_peft_adapter

        model = load_peft_adapter(model, adapter)
    metrics, records = evaluate_seq_cls(
        model, tokenizer, evaluation, args.glue_task, args.per_device_eval_batch_size, args.max_length
    )
    with folder.replace_whole() as tmp:
        return _write(args, metrics, records, evaluation, {}, into=tmp)


def summary_lines(result: Dict[str, Any]) -> List[str]:
    """The terminal report: one line per metric."""
    lines = [f"seq_cls on {result['eval_data']} ({result['eval_rows']} rows, labels {result['label_names']})"]
    lines += [f"  {name:<9} {100 * value:6.2f}" for name, value in result["metrics"].items()]
    return lines
