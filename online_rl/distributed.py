"""The LoRA update on N processes under torchrun (DDP): the same adapter as one process on the same batch.

Every rank holds the whole round and cuts it into the micro-batches and optimizer steps that
`LoraPolicy.update` makes on one process; within a step the micro-batches are dealt out
round-robin (micro-batch i to rank i mod N). A rank runs its micro-batches under DDP's `no_sync`
but the last, whose backward all-reduces the step's gradient. Each micro-batch's loss keeps its
one-process weight (its share of the whole step's tokens for token_mean "step", 1/micro-batches
for "micro", and the entropy band's 1/micro-batches), times N because DDP averages: so the
all-reduced gradient is the one-process gradient, whichever token_mean, entropy band or KL term,
and the optimizer steps, equal on every rank, keep the copies equal. Nothing is reduced across
ranks to normalise, since every rank sees every micro-batch's token count. A rank dealt no
micro-batch in a step runs one at weight 0: DDP needs every rank in each all-reduce. Metrics are
each micro-batch's, gathered from the ranks and averaged as one process does; peak memory is the
largest rank's.

Under `openvlthinker rl --trainer-procs N`, `launch` re-runs the loop through
`python -m torch.distributed.run`. Rank 0 runs the loop as one process would (harvest, rollouts
through the server, update, publish, gate); whenever it builds a policy or updates one it first
broadcasts that (the config and version, or the rollouts and advantages) on a gloo group, and
the other ranks (`follow`) do the same with it; a stop message ends them. Rank k trains on
cuda:k (or the CPU, with gloo); rank 0's adapter is the one published.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .config import RLConfig
from .logprobs import completion_stats
from .policy import LoraPolicy
from .rollout import Rollout

__all__ = ["DistributedPolicy", "Ranks", "follow", "init", "launch", "lead_policy", "main"]

# The followers wait on rank 0 between rounds, and a loop with --min-new may wait for users for hours.
CONTROL_TIMEOUT = timedelta(days=30)
STOP = ("stop",)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the torchrun job: rank, world size, device, and the gloo group for messages."""

    rank: int
    world: int
    device: torch.device
    control: Any  # a torch.distributed ProcessGroup


_ranks: Ranks | None = None


def init(device: str = "auto") -> Ranks:
    """Join the torchrun job (once per process): device per LOCAL_RANK, nccl on CUDA and gloo on the CPU.

    device: the RLConfig device, auto, cpu or cuda; auto is CUDA when torch sees a GPU.
    """
    global _ranks
    if _ranks is not None:
        return _ranks
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k not in os.environ]
    if missing:
        raise ValueError(f"not under torchrun ({', '.join(missing)} unset): run the trainer with "
                         "`openvlthinker rl --trainer-procs N`")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"a trainer over several processes puts rank k on cuda:k: device must be auto, cpu or "
                         f"cuda, got {device!r}")
    local = int(os.environ["LOCAL_RANK"])
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(f"trainer rank {local} needs cuda:{local}, but torch sees "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        where = torch.device("cuda", local)
        torch.cuda.set_device(where)
    else:
        where = torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", device_id=where if cuda else None)
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    _ranks = Ranks(dist.get_rank(), dist.get_world_size(), where, control)
    return _ranks


def _from_rank0(ranks: Ranks, value):
    """Rank 0's `value`, on every rank (pickled over the gloo group)."""
    box = [value if ranks.rank == 0 else None]
    dist.broadcast_object_list(box, src=0, group=ranks.control)
    return box[0]


def _gather(ranks: Ranks, value) -> list:
    """Every rank's `value`, in rank order, on every rank."""
    out: list = [None] * ranks.world
    dist.all_gather_object(out, value, group=ranks.control)
    return out


class _Scorer(torch.nn.Module):
    """The policy's gradient forward as a module, so DDP sees it called (completion_stats skips model.forward)."""

    def __init__(self, model, chunk_tokens: int | None):
        super().__init__()
        self.model, self.chunk_tokens = model, chunk_tokens

    def forward(self, batch, pos, tgt, mask):
        return completion_stats(self.model, batch, pos, tgt, mask, self.chunk_tokens)


class DistributedPolicy(LoraPolicy):
    """A LoraPolicy whose update all ranks of a torchrun job make together (see the module docstring).

    Every rank calls `update` with the same rollouts and advantages; with `lead`, rank 0's call first
    sends them to the ranks in `follow`.
    """

    def __init__(self, model, processor, cfg, device, chunk_tokens=None, *, ranks: Ranks, lead: bool = False):
        super().__init__(model, processor, cfg, device, chunk_tokens)
        self.ranks, self.lead = ranks, lead
        # Rank 0's adapter everywhere (a fresh LoRA's A is random): only the trainable weights, where DDP's own
        # start-up sync would send the whole base model.
        with torch.no_grad():
            for p in (p for p in model.parameters() if p.requires_grad):
                dist.broadcast(p.data, src=0)
        self.ddp = DistributedDataParallel(_Scorer(model, chunk_tokens),
                                           device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                           init_sync=False, forward_sync_buffers=False)

    @classmethod
    def wrap(cls, policy: LoraPolicy, ranks: Ranks, lead: bool = False) -> "DistributedPolicy":
        """The data-parallel policy on `policy`'s model (built on this rank's device)."""
        if policy.device != ranks.device:
            raise ValueError(f"the policy is on {policy.device}, this rank trains on {ranks.device}")
        return cls(policy.model, policy.processor, policy.cfg, policy.device, policy.chunk_tokens, ranks=ranks,
                   lead=lead)

    def _trains(self, start: int) -> bool:
        return (start // self.cfg.micro_batch) % self.ranks.world == self.ranks.rank

    def _stats(self, batch, pos, tgt, mask):
        return self.ddp(batch, pos, tgt, mask) if torch.is_grad_enabled() else super()._stats(batch, pos, tgt, mask)

    def update(self, rollouts: Sequence[Rollout], advantages: torch.Tensor) -> dict[str, float]:
        if self.lead and self.ranks.rank == 0:
            _from_rank0(self.ranks, ("update", list(rollouts), advantages.detach().cpu()))
        out = super().update(rollouts, advantages)
        peaks = _gather(self.ranks, (out["peak_mem_mb"], out["peak_mem_growth_mb"]))
        out.update(peak_mem_mb=max(p[0] for p in peaks), peak_mem_growth_mb=max(p[1] for p in peaks),
                   procs=float(self.ranks.world))
        return out

    def _optimizer_step(self, rollouts: Sequence[Rollout], old: list[torch.Tensor | None], advantages: torch.Tensor,
                        starts: list[int]) -> list[dict[str, float]]:
        """This rank's micro-batches of the step, the gradient all-reduced, one optimizer step on every rank;
        every rank's micro-batch metrics in one process's order, then the step's own."""
        cfg, world, began = self.cfg, self.ranks.world, time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = [sum(len(r.completion_ids) for r in rollouts[start : start + cfg.micro_batch]) for start in starts]
        mine = [k for k, start in enumerate(starts) if self._trains(start)]
        plan = mine or [0]  # no micro-batch here: the step's first at weight 0, for the all-reduce
        weight = float(world) if mine else 0.0  # DDP divides the summed gradient by the world size
        out = []
        for j, k in enumerate(plan):
            part = rollouts[starts[k] : starts[k] + cfg.micro_batch]
            share = tokens[k] / sum(tokens) if cfg.token_mean == "step" else 1.0 / len(starts)
            before = old[k] if mine else torch.zeros(len(part), max(len(r.completion_ids) for r in part))
            with self.ddp.no_sync() if j < len(plan) - 1 else nullcontext():
                metrics = self._micro_step(part, before, advantages[starts[k] : starts[k] + len(part)],
                                           loss_scale=share * weight, penalty_scale=weight / len(starts))
            if mine:
                out.append((k, metrics))
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        self.optimizer.step()
        gathered = sorted((k, m) for part in _gather(self.ranks, out) for k, m in part)
        return [m for _, m in gathered] + [{"grad_norm": norm, "step_s": time.perf_counter() - began}]

    def version_kl(self, rollouts: Sequence[Rollout], before: torch.Tensor | None) -> float | None:
        # Rank 0 holds the first micro-batch's old logprobs (micro-batch 0 is its own).
        return _from_rank0(self.ranks, super().version_kl(rollouts, before) if self.ranks.rank == 0 else None)


def _build(cfg: RLConfig, version: str | None, ranks: Ranks, lead: bool) -> DistributedPolicy:
    """The loop's policy for `version` on this rank's device, data-parallel."""
    from .loop import served_policy

    local = dataclasses.replace(cfg, trainer_procs=1, device=str(ranks.device))
    return DistributedPolicy.wrap(served_policy(local, version), ranks, lead=lead)


def lead_policy(cfg: RLConfig, version: str | None) -> DistributedPolicy:
    """Rank 0's policy for `version` (None: a fresh LoRA); the following ranks are told to build the same."""
    if _ranks is None:
        raise ValueError(f"trainer_procs {cfg.trainer_procs} runs under torchrun: start the loop with "
                         "`openvlthinker rl --trainer-procs N`")
    if _ranks.world != cfg.trainer_procs:
        raise ValueError(f"trainer_procs is {cfg.trainer_procs} but torchrun started {_ranks.world} processes")
    _from_rank0(_ranks, ("policy", cfg, version))
    return _build(cfg, version, _ranks, lead=True)


def follow(ranks: Ranks, log=print) -> int:
    """A following rank: build the policies rank 0 builds and take part in its updates until it stops; returns
    how many updates it took part in."""
    policy, updates = None, 0
    while True:
        message = _from_rank0(ranks, None)
        if message == STOP:
            return updates
        if message[0] == "policy":
            policy = _build(message[1], message[2], ranks, lead=False)
        elif message[0] == "update":
            rollouts, advantages = message[1], message[2]
            started = time.perf_counter()
            policy.update(rollouts, advantages)
            updates += 1
            log(f"trainer rank {ranks.rank}: update {updates} on {len(rollouts)} rollouts "
                f"({time.perf_counter() - started:.1f} s)")
        else:
            raise ValueError(f"unknown message from rank 0: {message[0]!r}")


def _mapping(cfg: RLConfig) -> dict[str, Any]:
    """RLConfig as the flat mapping `RLConfig.from_mapping` reads (JSON-ready)."""
    flat = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "update"}
    flat.update(dataclasses.asdict(cfg.update))
    flat["skip_tasks"] = list(cfg.skip_tasks)
    return flat


def launch(cfg: RLConfig, rounds: int, out_dir: str | Path, **run_kwargs) -> int:
    """Run the loop (`online_rl.loop.run` arguments) on cfg.trainer_procs processes through torchrun; its exit code."""
    procs = cfg.trainer_procs
    if procs < 2:
        raise ValueError(f"launch needs trainer_procs >= 2, got {procs}")
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if procs > torch.cuda.device_count():
            raise ValueError(f"--trainer-procs {procs} needs {procs} CUDA devices (one per rank), torch sees "
                             f"{torch.cuda.device_count()}; use at most that many, or --device cpu")
    spec = {"config": _mapping(cfg), "rounds": rounds, "out_dir": str(out_dir), "run": run_kwargs}
    fd, path = tempfile.mkstemp(prefix="rl-trainer-", suffix=".json")  # mode 0600: the spec holds the keys
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(spec, fh)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                   "-m", "online_rl.distributed", path]
        process = subprocess.Popen(command)
        try:  # a SIGTERM for `rl` is torchrun's too, which stops its ranks: none is left holding a GPU
            previous = signal.signal(signal.SIGTERM, lambda *_: process.terminate())
        except ValueError:  # not the main thread: signals stay as they were
            previous = None
        try:
            return process.wait()
        except KeyboardInterrupt:  # Ctrl-C reached torchrun and its ranks too: let them stop
            return process.wait()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    finally:
        os.unlink(path)


def main(argv: Sequence[str] | None = None) -> int:
    """A torchrun worker of `openvlthinker rl --trainer-procs N`: rank 0 runs the loop, the others follow."""
    from . import loop

    (path,) = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    cfg = RLConfig.from_mapping(spec["config"])
    torch.set_num_threads(1)  # as `rl` runs its trainer
    sys.stdout.reconfigure(line_buffering=True)  # the ranks' lines interleave in order under torchrun
    ranks = init(cfg.device)
    try:
        if ranks.rank != 0:
            follow(ranks)
            return 0
        try:
            loop.run(cfg, spec["rounds"], spec["out_dir"], **spec["run"])
        except KeyboardInterrupt:
            print("stopped; the next run resumes from", Path(spec["out_dir"]) / "state.json")
        except (ValueError, FileNotFoundError) as exc:  # as the `openvlthinker` command reports them
            print(f"openvlthinker rl: error: {exc}", file=sys.stderr)
            return 2
        finally:
            _from_rank0(ranks, STOP)
        return 0
    finally:
        _shut_down()


def _shut_down() -> None:
    """Free this rank's DDP reducers and gloo work, then its process groups, while the interpreter is whole.

    A policy left in a reference cycle is otherwise freed during interpreter finalization, when its
    reducer's gloo work can no longer take the GIL: the process aborts ("terminate called without an
    active exception") after a run that succeeded.
    """
    global _ranks
    gc.collect()
    _ranks = None
    dist.destroy_process_group()


if __name__ == "__main__":
    # The module's own copy, not this __main__ one: the loop's lead_policy reads the ranks `init` keeps there.
    from online_rl.distributed import main as _main

    sys.exit(_main())
