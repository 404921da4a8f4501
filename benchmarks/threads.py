"""Training time on a quiet machine and with cores kept busy by another process, per thread policy.

Trains a 5-member cnn1d ensemble on MNIST-1D (``--epochs``, batch 100, Adam) in a fresh
process per setting (OpenMP reads its wait policy once, when torch loads), with

- ``torch default``: torch's thread count (every core) and OpenMP's default wait policy
  (threads spin at barriers): what ensemblekit did before its thread policy;
- fixed counts ``N thread(s)``, with the default and with the passive wait policy
  (``OMP_WAIT_POLICY=PASSIVE``: idle threads sleep);
- ``ensemblekit default``: the thread count of :func:`ensemblekit.threads.measure` (the
  cores free at start), OpenMP's default wait policy.

The script itself starts ``--busy`` processes running ``yes > /dev/null`` (each keeps one
core busy) for the loaded condition and stops them afterwards. Settings and conditions are
interleaved, best of ``--repeats``. Only the training is timed.

    python benchmarks/threads.py                  # quiet and 1 busy core, best of 3
    python benchmarks/threads.py --busy 1 --repeats 5 --epochs 5
    python benchmarks/threads.py --members 1 --optimizer sgd    # the main job's single networks
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(threads: str, epochs: int, members: int, optimizer: str) -> None:
    """Runs in the child (its OMP_WAIT_POLICY set by the parent): set the threads, train, print one JSON line."""
    import torch

    import ensemblekit as ek
    from ensemblekit.ensemble import Ensemble
    from ensemblekit.models import model_factory
    from ensemblekit.threads import configure_threads
    from ensemblekit.training import Trainer

    if threads == "auto":
        chosen = configure_threads().threads
    elif threads != "torch":
        torch.set_num_threads(int(threads))
    # "sgd": the main job's recipe (SGD with momentum and weight decay, cosine, a validation split)
    data = ek.load_dataset("mnist1d", val_fraction=0.1 if optimizer == "sgd" else 0.0)
    factory = model_factory({"name": "cnn1d"}, input_shape=data.input_shape, num_classes=data.num_classes)
    opt = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4} if optimizer == "sgd" else {"name": "adam", "lr": 0.01}
    cfg = {"epochs": epochs, "batch_size": 100, "optimizer": opt, "schedule": "cosine" if optimizer == "sgd" else "constant", "progress": False}
    trainer = Trainer(Ensemble.from_factory(factory, seeds=list(range(members))), data, cfg, seed=0)
    trainer.fit()
    seconds = trainer.wall_s  # training steps only (the validation pass is not timed)
    chosen = torch.get_num_threads()
    print(json.dumps({"seconds": seconds, "threads": chosen, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


SETTINGS = {  # name -> (threads, passive wait policy)
    "torch default": ("torch", False),
    "1 thread": ("1", False),
    "1 thread, passive": ("1", True),
    "{n} threads": ("{n}", False),
    "{n} threads, passive": ("{n}", True),
    "ensemblekit default": ("auto", False),
}


def run_setting(threads: str, passive: bool, args) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("ENSEMBLEKIT_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run([sys.executable, __file__, "--worker", threads, "--epochs", str(args.epochs),
                          "--members", str(args.members), "--optimizer", args.optimizer],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="sgd: the main job's recipe, with a validation split")
    p.add_argument("--busy", type=int, default=1, help="cores to keep busy in the loaded condition")
    p.add_argument("--settings", nargs="+", default=None, help="a subset of the setting names")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    if args.worker is not None:
        worker(args.worker, args.epochs, args.members, args.optimizer)
        return
    n = os.cpu_count() or 1
    settings = {name.format(n=n): (t.format(n=n), passive) for name, (t, passive) in SETTINGS.items()}
    if args.settings:
        settings = {k: v for k, v in settings.items() if k in args.settings or k in ("ensemblekit default", "torch default")}
    if n == 1:
        settings = {k: v for k, v in settings.items() if not k.startswith("1 thread")}
    conditions = ["quiet", f"{args.busy} busy core{'s' if args.busy > 1 else ''}"]
    best: dict[tuple[str, str], dict] = {}
    for r in range(args.repeats):
        for cond in conditions:
            hogs = []
            if cond != "quiet":
                hogs = [subprocess.Popen("exec yes > /dev/null", shell=True) for _ in range(args.busy)]
                time.sleep(1.0)
            try:
                for name, (threads, passive) in settings.items():
                    res = run_setting(threads, passive, args)
                    key = (cond, name)
                    if key not in best or res["seconds"] < best[key]["seconds"]:
                        best[key] = res
                    print(f"[{r + 1}/{args.repeats}] {cond:>12}  {name:<22} {res['seconds']:6.2f} s  ({res['threads']} threads)", flush=True)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
    print(f"\n{args.members}-member cnn1d, MNIST-1D, {args.optimizer}, {args.epochs} epochs; {n} cores; best of {args.repeats} (seconds, threads used)")
    print(f"{'setting':<24}" + "".join(f"{c:>22}" for c in conditions))
    for name in settings:
        print(f"{name:<24}" + "".join(f"{best[(c, name)]['seconds']:>16.2f} s ({best[(c, name)]['threads']})" for c in conditions))
    for cond in conditions:
        fixed = {k: v for k, v in settings.items() if v[0] != "auto"}  # torch's default is the all-cores count
        top = min(fixed, key=lambda k: best[(cond, k)]["seconds"])
        ours = best[(cond, "ensemblekit default")]["seconds"]
        print(f"{cond}: ensemblekit default {ours:.2f} s = {ours / best[(cond, top)]['seconds']:.2f}x the best fixed setting "
              f"({top}, {best[(cond, top)]['seconds']:.2f} s); torch default takes {best[(cond, 'torch default')]['seconds'] / ours:.2f}x ensemblekit's time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"condition": c, "setting": s, **v} for (c, s), v in best.items()], f, indent=1)


if __name__ == "__main__":
    main()
