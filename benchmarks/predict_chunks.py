"""Predicting with a large ensemble: members in chunks through the stacked path vs all at once vs a loop.

FGE at a 3-network budget averages 72 snapshots of one architecture: one stacked group of
72 members. This script builds such an ensemble (``--members``, cnn1d on MNIST-1D) and
times ``Ensemble.predict_proba`` on the test split with ``member_chunk`` = ``auto`` (the
default), ``None`` (all members in one stacked pass) and fixed sizes, and a plain loop over
72 ``nn.Module`` copies (what a script would do). Each setting runs in a fresh process so
its peak resident memory (``ru_maxrss``, above the process after building the models) is
its own. Best of ``--repeats`` in that process.

    python benchmarks/predict_chunks.py                  # 72 members, batch 1024
    python benchmarks/predict_chunks.py --members 144 --batch-size 4096
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def worker(setting: str, members: int, batch_size: int, repeats: int) -> None:
    import torch

    import ensemblekit as ek
    from ensemblekit.ensemble import Ensemble
    from ensemblekit.models import model_factory

    data = ek.load_dataset("mnist1d", val_fraction=0.0)
    factory = model_factory({"name": "cnn1d"}, input_shape=data.input_shape, num_classes=data.num_classes)
    ens = Ensemble.from_factory(factory, seeds=list(range(members)))
    x = data.test.x
    modules = ens.to_modules() if setting == "loop" else None
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def run() -> torch.Tensor:
        if modules is not None:
            with torch.no_grad():
                probs = []
                for m in modules:
                    m.eval()
                    probs.append(torch.cat([m(x[i:i + batch_size]).softmax(-1) for i in range(0, len(x), batch_size)]))
                return torch.stack(probs)
        chunk = {"auto": "auto", "all": None}.get(setting, setting)
        return ens.predict_proba(x, batch_size=batch_size, member_chunk=chunk if chunk in ("auto", None) else int(chunk))

    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    chunk = ens.inference_chunk(x[:batch_size]) if setting == "auto" else None
    print(json.dumps({"seconds": best, "peak_mib": peak / 1024, "chunk": chunk, "n": len(x), "mean": float(out.mean(0).max(-1).values.mean())}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=72)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--settings", nargs="+", default=["auto", "all", "1", "8", "loop"])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        worker(args.worker, args.members, args.batch_size, args.repeats)
        return
    rows = {}
    for s in args.settings:
        out = subprocess.run([sys.executable, __file__, "--worker", s, "--members", str(args.members), "--batch-size", str(args.batch_size),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
        rows[s] = json.loads(out.stdout.strip().splitlines()[-1])
    n = next(iter(rows.values()))["n"]
    print(f"{args.members}-member cnn1d ensemble, MNIST-1D test ({n} examples), batch {args.batch_size}; best of {args.repeats}")
    names = {"auto": "member_chunk auto", "all": "all members at once", "loop": "loop over modules"}
    loop = rows.get("loop", {}).get("seconds")
    for s, r in rows.items():
        name = names.get(s, f"member_chunk {s}") + (f" ({r['chunk']} members)" if r.get("chunk") else "")
        vs = f"  {loop / r['seconds']:5.2f}x the loop's speed" if loop and s != "loop" else ""
        print(f"{name:<36} {r['seconds']:7.3f} s   peak +{r['peak_mib']:7.1f} MiB{vs}")
    means = {round(r["mean"], 6) for r in rows.values()}
    print("same predictions in every setting" if len(means) == 1 else f"predictions differ: {means}")


if __name__ == "__main__":
    main()
