"""Builders of a tiny Llama with a tiny tokenizer and of a small closed-label data file (their session fixtures are in tests/conftest.py)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from linchain.data import format_prompt


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """'Is N even?' rows: a closed-label task (yes/no) in LLM-Adapters format."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randrange(1000)
        answer = "yes" if k % 2 == 0 else "no"
        rows.append({"instruction": f"Is {k} an even number?", "input": "", "output": answer, "answer": answer})
    return rows


def build_tiny_model(folder: Path) -> Path:
    rows = make_rows(200, seed=99)
    corpus = [format_prompt(r["instruction"]) + r["output"] for r in rows]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def base_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """Flags for a few-second run on the tiny model (no tqdm, no reporting)."""
    return [
        "--model_name_or_path",
        str(model_dir),
        "--data",
        str(data),
        "--output_dir",
        str(out),
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "2",
        "--learning_rate",
        "1e-2",
        "--cutoff_len",
        "64",
        "--val_set_size",
        "16",
        "--r",
        "4",
        "--alpha",
        "8",
        "--logging_steps",
        "1",
        "--eval_steps",
        "2",
        "--save_steps",
        "2",
        "--warmup_steps",
        "1",
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        "--seed",
        "0",
        *extra,
    ]
