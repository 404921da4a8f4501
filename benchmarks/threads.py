"""Training time on a quiet machine, next to a busy core, and when load arrives mid-run, per thread policy.

Trains a 5-member cnn1d ensemble on MNIST-1D (``--epochs``, batch 100, Adam) in a fresh
process per setting (OpenMP reads its wait policy once, when torch loads), with

- ``torch default``: torch's thread count (every core) and OpenMP's default wait policy
  (threads spin at barriers): what ensemblekit did before its thread policy;
- fixed counts ``N thread(s)``, with the default and with the passive wait policy
  (``OMP_WAIT_POLICY=PASSIVE``: idle threads sleep);
- ``ensemblekit default``: :func:`ensemblekit.threads.configure_threads` (the cores free
  at start, then following the load while training), OpenMP's default wait policy.

Conditions:

- ``quiet``: nothing else started;
- ``N busy core(s)``: the script starts ``--busy`` processes running ``yes > /dev/null``
  (each keeps one core busy) 1 s before the runs and stops them afterwards;
- ``load after Ns``: a one-thread torch matrix-product loop starts ``--delay`` seconds
  after the measured run's training starts (what a second job started a few minutes into
  a long one does), and stops when the run ends. The runs of this condition train
  ``--late-epochs`` epochs, so the load arrives well before the end.

Settings and conditions are interleaved, best of ``--repeats``. Only the training is timed.
The last table gives, per condition, the ensemblekit default's time over each fixed
setting's (below 1: the default is faster); the target is at most 1.3x the best fixed one.

    python benchmarks/threads.py                  # all three conditions, best of 3
    python benchmarks/threads.py --busy 1 --repeats 5 --epochs 5
    python benchmarks/threads.py --members 1 --optimizer sgd    # the main job's single networks
    python benchmarks/threads.py --conditions late --delay 3 --late-epochs 45
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

TARGET = 1.3  # the default's time over the best fixed setting's, at most
MATMUL_LOOP = "import torch\ntorch.set_num_threads(1)\na = torch.randn(256, 256)\nwhile True:\n    a @ a\n"


def worker(threads: str, epochs: int, members: int, optimizer: str) -> None:
    """Runs in the child (its OMP_WAIT_POLICY set by the parent): set the threads, print
    ``START`` when training starts, train, print one JSON line."""
    import torch

    import ensemblekit as ek
    from ensemblekit.ensemble import Ensemble
    from ensemblekit.models import model_factory
    from ensemblekit.threads import configure_threads, thread_changes
    from ensemblekit.training import Trainer

    if threads == "auto":
        configure_threads()
    elif threads != "torch":
        torch.set_num_threads(int(threads))
    start_threads = torch.get_num_threads()
    # "sgd": the main job's recipe (SGD with momentum and weight decay, cosine, a validation split)
    data = ek.load_dataset("mnist1d", val_fraction=0.1 if optimizer == "sgd" else 0.0)
    factory = model_factory({"name": "cnn1d"}, input_shape=data.input_shape, num_classes=data.num_classes)
    opt = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4} if optimizer == "sgd" else {"name": "adam", "lr": 0.01}
    cfg = {"epochs": epochs, "batch_size": 100, "optimizer": opt, "schedule": "cosine" if optimizer == "sgd" else "constant", "progress": False}
    trainer = Trainer(Ensemble.from_factory(factory, seeds=list(range(members))), data, cfg, seed=0)
    print("START", flush=True)
    trainer.fit()
    changes = [[round(e["time"], 1), e["old"], e["new"], e["load"]] for e in thread_changes()]
    print(json.dumps({"seconds": trainer.wall_s,  # training steps only (the validation pass is not timed)
                      "threads": "".join([str(start_threads)] + [f">{c[2]}" for c in changes]),
                      "changes": changes, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


SETTINGS = {  # name -> (threads, passive wait policy)
    "torch default": ("torch", False),
    "1 thread": ("1", False),
    "1 thread, passive": ("1", True),
    "{n} threads": ("{n}", False),
    "{n} threads, passive": ("{n}", True),
    "ensemblekit default": ("auto", False),
}


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def run_setting(threads: str, passive: bool, args, epochs: int, late_delay: float | None = None) -> dict:
    """Train in a fresh process; with ``late_delay``, a one-thread matrix-product loop starts
    that many seconds after its training starts and stops when it ends."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "ENSEMBLEKIT_THREADS", "OMP_NUM_THREADS")}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, __file__, "--worker", threads, "--epochs", str(epochs), "--members", str(args.members), "--optimizer", args.optimizer]
    hogs: list[subprocess.Popen] = []
    timer = None
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        lines = []
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.strip() == "START" and late_delay is not None:
                    timer = threading.Timer(late_delay, lambda: hogs.append(subprocess.Popen([sys.executable, "-c", MATMUL_LOOP])))
                    timer.start()
                lines.append(line)
            proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()
            _stop(hogs)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-3000:]}")
    return json.loads(lines[-1])


def run_condition(cond: str, settings: dict, args, best: dict, r: int) -> None:
    """Every setting once under ``cond``; keeps the fastest run of each in ``best``."""
    hogs = [subprocess.Popen("exec yes > /dev/null", shell=True) for _ in range(args.busy)] if "busy" in cond else []
    if hogs:
        time.sleep(1.0)
    late = cond.startswith("load after")
    try:
        for name, (threads, passive) in settings.items():
            res = run_setting(threads, passive, args, args.late_epochs if late else args.epochs, args.delay if late else None)
            if (cond, name) not in best or res["seconds"] < best[(cond, name)]["seconds"]:
                best[(cond, name)] = res
            print(f"[{r + 1}/{args.repeats}] {cond:>16}  {name:<22} {res['seconds']:6.2f} s  ({res['threads']} threads)", flush=True)
    finally:
        _stop(hogs)


def report(settings: dict, conditions: list[str], best: dict, args, n: int) -> None:
    """The best times, and the default's time over each fixed setting's, condition by condition."""
    print(f"\n{args.members}-member cnn1d, MNIST-1D, {args.optimizer}, {args.epochs} epochs ({args.late_epochs} with the late load); "
          f"{n} cores; best of {args.repeats} (seconds, threads used; a>b: changed from a to b)")
    print(f"{'setting':<24}" + "".join(f"{c:>22}" for c in conditions))
    for name in settings:
        print(f"{name:<24}" + "".join(f"{best[(c, name)]['seconds']:>13.2f} s ({best[(c, name)]['threads']:>4})" for c in conditions))
    fixed = [k for k, v in settings.items() if v[0] != "auto"]  # torch's default is the all-cores count
    print(f"\nensemblekit default's time / each fixed setting's\n{'fixed setting':<24}" + "".join(f"{c:>22}" for c in conditions))
    for name in fixed:
        print(f"{name:<24}" + "".join(f"{best[(c, 'ensemblekit default')]['seconds'] / best[(c, name)]['seconds']:>21.2f}x" for c in conditions))
    for cond in conditions:
        top = min(fixed, key=lambda k: best[(cond, k)]["seconds"])
        ours = best[(cond, "ensemblekit default")]["seconds"]
        ratio = ours / best[(cond, top)]["seconds"]
        print(f"{cond}: ensemblekit default {ours:.2f} s = {ratio:.2f}x the best fixed setting ({top}, {best[(cond, top)]['seconds']:.2f} s; "
              f"target <= {TARGET}x: {'met' if ratio <= TARGET else 'NOT met'})"
              + (f"; torch default takes {best[(cond, 'torch default')]['seconds'] / ours:.2f}x ensemblekit's time"
                 if (cond, "torch default") in best else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--late-epochs", type=int, default=45, help="epochs of the runs with the late load (about 9 s on 2 quiet cores: the load arrives in the first third)")
    p.add_argument("--delay", type=float, default=3.0, help="seconds after the training starts that the late load starts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"], help="sgd: the main job's recipe, with a validation split")
    p.add_argument("--busy", type=int, default=1, help="cores to keep busy in the loaded condition")
    p.add_argument("--conditions", nargs="+", default=["quiet", "busy", "late"], choices=["quiet", "busy", "late"])
    p.add_argument("--settings", nargs="+", default=None, help="a subset of the setting names (the ensemblekit default always runs: it is what the ratios compare)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()
    if args.worker is not None:
        worker(args.worker, args.epochs, args.members, args.optimizer)
        return
    n = os.cpu_count() or 1
    settings = {name.format(n=n): (t.format(n=n), passive) for name, (t, passive) in SETTINGS.items()}
    if args.settings:
        settings = {k: v for k, v in settings.items() if k in args.settings or k == "ensemblekit default"}
    if n == 1:
        settings = {k: v for k, v in settings.items() if not k.startswith("1 thread")}
    names = {"quiet": "quiet", "busy": f"{args.busy} busy core{'s' if args.busy > 1 else ''}", "late": f"load after {args.delay:g}s"}
    conditions = [names[c] for c in args.conditions]
    best: dict[tuple[str, str], dict] = {}
    for r in range(args.repeats):
        for cond in conditions:
            run_condition(cond, settings, args, best, r)
    report(settings, conditions, best, args, n)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"condition": c, "setting": s, **v} for (c, s), v in best.items()], f, indent=1)


if __name__ == "__main__":
    main()
