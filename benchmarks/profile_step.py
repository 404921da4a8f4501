"""Where one training step of a stacked ensemble spends its time (``torch.profiler``).

Trains an M-member ensemble with ensemblekit's engine for one warm-up epoch, times
``--epochs`` more, then profiles one more and prints the operators with the most self CPU time (and the
step's wall time, profiled and unprofiled). What is not arithmetic (``aten::copy_``,
``aten::cat``, ``aten::stack``, small element-wise ops, Python) is overhead to remove.

    python benchmarks/profile_step.py                     # cnn1d, M = 5, 2 threads
    python benchmarks/profile_step.py --members 1 5 10 --top 25
    python benchmarks/profile_step.py --optimizer sgd --grad-clip 1.0
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm
from torch.profiler import ProfilerActivity, profile

import ensemblekit as ek
from ensemblekit.ensemble import Ensemble
from ensemblekit.models import model_factory
from ensemblekit._runtime import tune_allocator
from ensemblekit.training import Trainer
from ensemblekit.training.schedules import lambda_lr


def _trainer(data: ek.Data, factory, members: int, args) -> Trainer:
    cfg = {"epochs": 10**6, "batch_size": args.batch_size, "optimizer": {"name": args.optimizer, "lr": 0.01},
           "schedule": "constant", "progress": False, "checkpoint_every": 10**6}
    if args.grad_clip:
        cfg["grad_clip"] = args.grad_clip
    ens = Ensemble.from_factory(factory, seeds=list(range(members)))
    return Trainer(ens, data, cfg, seed=0)


def profile_members(data: ek.Data, factory, members: int, args) -> None:
    """One warm-up epoch (its first step is FLOP-counted), one timed, one profiled."""
    trainer = _trainer(data, factory, members, args)
    scheduler = lambda_lr(trainer.optimizer, trainer.schedule, trainer.base_lr)
    bar = tqdm(disable=True)
    tune_allocator()
    trainer._run_epoch(scheduler, bar)
    steps = trainer.steps_per_epoch
    t = time.perf_counter()
    for _ in range(args.epochs):
        trainer._run_epoch(scheduler, bar)
    plain = (time.perf_counter() - t) / (steps * args.epochs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        trainer._run_epoch(scheduler, bar)
        profiled = (time.perf_counter() - t) / steps
    print(f"\nM={members}: {plain * 1e3:.2f} ms/step ({profiled * 1e3:.2f} profiled), {torch.get_num_threads()} threads, {steps} steps profiled")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=42))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, nargs="+", default=[5])
    p.add_argument("--epochs", type=int, default=3, help="epochs timed without the profiler (40 steps each)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = ek.load_dataset("mnist1d", val_fraction=0.0)
    factory = model_factory({"name": "cnn1d"}, input_shape=data.input_shape, num_classes=data.num_classes)
    for m in args.members:
        profile_members(data, factory, m, args)


if __name__ == "__main__":
    main()
