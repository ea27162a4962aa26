"""FSDP2 (``torch.distributed.fsdp.fully_shard``) on CPU: 2 gloo processes under torchrun train a LinChain
adapter on a tiny Llama exactly like one process on the same global batch.

The shipped accelerate FSDP config cannot be tested on CPU: accelerate turns FSDP on only for
accelerator backends, so under ``linchain train`` (``use_cpu``) it runs multi-CPU DDP instead (README,
"Several processes"). This test drives FSDP2 directly, as one would in an own training loop.

Each rank gets half of every global batch (2 of 4 rows, all of the same length, so the mean of the
two ranks' mean losses is the global mean loss); FSDP2 all-gathers the sharded parameters (frozen
base and adapter alike) for forward/backward and reduce-scatters the adapter's gradients with a mean,
and AdamW steps on the local shards. The one-process reference runs in the pytest process on the full
batch. Both agree up to float32 summation order (measured: <= 1e-6): 1e-5 absolute on the step
losses, relative to each tensor's largest entry on the first step's gradients, and absolute on every
adapter weight (values ~1e-1) after 3 AdamW steps at lr 1e-2. The comparison can fail: a summed instead
of averaged gradient is off by 100% (checked by hand, scaling the loss by the world size), and the
test itself checks that a run on rank 0's rows alone (a missing reduction) lands far outside it.

Run by hand: ``torchrun --nproc_per_node 2 -m tests.train.test_fsdp OUT_DIR`` from the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import load_file, save_file

from linchain import LinChainConfig

from ..conftest import tiny_llama

ROOT = Path(__file__).resolve().parents[2]


def _has_fsdp2() -> bool:
    try:  # public from torch 2.6 (pyproject allows 2.4)
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return torch.distributed.is_available()


pytestmark = pytest.mark.skipif(
    not _has_fsdp2(), reason="needs torch >= 2.6 with torch.distributed (FSDP2's fully_shard)"
)

STEPS, ROWS, LENGTH, LR, TOL = 3, 4, 12, 1e-2, 1e-5
#: AdamW eps above the smallest gradients (attention q/k get ~1e-9..1e-7 on this random model): with the
#: default 1e-8, Adam would blow float32 summation noise in those up to lr-sized steps
EPS = 1e-6
#: (num_mixers, mixer_bias): the paper's linear chain and the reference code's affine one
CASES = {"k3": (3, False), "k2-bias": (2, True)}


def build(case: str):
    """The tiny Llama with a LinChain adapter whose every factor is random and non-zero (seeded)."""
    num_mixers, mixer_bias = CASES[case]
    model = tiny_llama(seed=0)
    cfg = LinChainConfig(
        r=4,
        alpha=8,
        num_mixers=num_mixers,
        mixer_bias=mixer_bias,
        dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"],
    )
    torch.manual_seed(1)
    model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "linchain_B" in name:  # B = 0 at init would make the first step's A/mixer gradients vanish
                p.normal_(0.0, 0.1)
    model.train()
    return model


def batches() -> torch.Tensor:
    """(STEPS, ROWS, LENGTH) token ids, the same in every process."""
    return torch.randint(0, 97, (STEPS, ROWS, LENGTH), generator=torch.Generator().manual_seed(2))


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def first_grads(model) -> dict[str, torch.Tensor]:
    return {f"grad/{n}": p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train_one_process(case: str, rows: slice = slice(None)):
    """Losses, first-step gradients and final adapter weights of the reference run."""
    model = build(case)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, eps=EPS)
    losses, grads = [], {}
    for ids in batches()[:, rows]:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = grads or first_grads(model)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, grads, adapter_state(model)


def worker(out: Path) -> None:
    """One torchrun rank: FSDP2 over the gloo processes; rank 0 writes the losses and the full adapter."""
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import DTensor, Shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert ROWS % world == 0
    share = ROWS // world
    for case in CASES:
        model = build(case)
        # One FSDP unit per decoder layer, then the root (embeddings, norm, head): the usual FSDP2 wrapping,
        # which the accelerate config's TRANSFORMER_BASED_WRAP also does. Frozen base weights and trainable
        # adapter factors share a unit; FSDP2 reduce-scatters gradients only for the trainable ones.
        # reduce_dtype fp32: the gradient mean is taken in fp32 (the parameters are fp32 here anyway).
        policy = MixedPrecisionPolicy(reduce_dtype=torch.float32)
        for layer in model.base_model.model.model.layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, eps=EPS)
        # every parameter is now a DTensor sharded over the ranks (dim 0)
        assert all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in model.parameters())
        losses, grads = [], {}
        for ids in batches()[:, rank * share : (rank + 1) * share]:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            # the reduce-scattered (mean) gradient shards, gathered (a collective: every rank calls it)
            grads = grads or {k: g.full_tensor() for k, g in first_grads(model).items()}
            opt.step()
            opt.zero_grad()
            mean = loss.detach().clone()
            dist.all_reduce(mean)  # the global batch's mean loss, for the record (gloo has no AVG)
            losses.append(mean.item() / world)
        # full_tensor() all-gathers each DTensor shard: a collective, so every rank calls it
        full = {n: p.full_tensor() for n, p in adapter_state(model).items()}
        full.update(grads)
        if rank == 0:
            full["losses"] = torch.tensor(losses, dtype=torch.float64)
            save_file(full, str(out / f"{case}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # --standalone: a free local port for the rendezvous, so parallel runs cannot collide
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "tests.train.test_fsdp",
        str(out),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out


def _max_diff(a: dict, b: dict, relative: bool = False) -> tuple[float, str]:
    """Largest |a - b| over the tensors (divided by max |b| per tensor when relative), and where."""
    return max(((a[k] - b[k]).abs().max().item() / (b[k].abs().max().item() if relative else 1.0), k) for k in b)


@pytest.mark.parametrize("case", list(CASES))
def test_fsdp2_two_processes_match_one_process(fsdp_results, case):
    two = load_file(str(fsdp_results / f"{case}.safetensors"))
    losses_two = two.pop("losses").tolist()
    grads_two = {k: two.pop(k) for k in list(two) if k.startswith("grad/")}
    losses_one, grads_one, one = train_one_process(case)
    assert one.keys() == two.keys() and grads_one.keys() == grads_two.keys()
    assert any("linchain_mixers" in k for k in one)
    assert max(abs(a - b) for a, b in zip(losses_one, losses_two)) < TOL, (losses_one, losses_two)
    # gradients too: Adam's step is nearly scale-free, so a summed instead of averaged gradient would
    # hardly show in the weights
    assert (worst := _max_diff(grads_two, grads_one, relative=True))[0] < TOL, worst
    assert (worst := _max_diff(two, one))[0] < TOL, worst
    # with one rank's rows alone (a missing reduction) the results land far outside the tolerance,
    # and the adapter did move
    _, grads_alone, alone = train_one_process(case, rows=slice(0, ROWS // 2))
    assert _max_diff(grads_alone, grads_one, relative=True)[0] > 1e-2
    assert _max_diff(alone, one)[0] > 100 * TOL
    assert _max_diff(adapter_state(build(case)), one)[0] > 100 * TOL


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
