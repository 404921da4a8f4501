"""What the post-hoc fits cost next to training, in one run: Laplace (last layer), SNGP's covariance, DDU's density.

For the MNIST-1D ``cnn1d`` (Adam 0.01, cosine, batch 100) it trains one network for ``--epochs``
epochs and a 5-member ensemble for the same epochs, then times each fit on the training split:

- ``laplace`` (kfac, full, diag; prior by the marginal likelihood) on the one network,
- ``laplace_ensemble`` (kfac) on the five members,
- SNGP's GP covariance and DDU's class-conditional Gaussians on their own trained networks,

best of ``--repeats`` fits (interleaved), and prints each fit's seconds and its ratio to the
training it follows (the issue's bar: a Laplace fit <= 10% of the network's training time).

    ensemblekit --threads 1 ...   or   python benchmarks/posthoc_fit.py --threads 1 --repeats 5
    (run nothing else at the same time: timings are shared-machine sensitive)
"""

from __future__ import annotations

import argparse
import time

import torch

import ensemblekit as ek


def _train(name: str, data: ek.Data, epochs: int, **kw) -> tuple[ek.Method, float]:
    method = ek.create_method(name, model="cnn1d", epochs=epochs, batch_size=100, optimizer={"name": "adam", "lr": 0.01},
                              schedule="cosine", progress=False, **kw)
    method.fit(data)
    return method, float(method.cost_["train"])


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from ensemblekit.distance.ddu import fit_ddu
    from ensemblekit.distance.gp import fit_gp_covariance
    from ensemblekit.laplace.predictor import fit_laplace

    data = ek.load_dataset("mnist1d")
    one, t_one = _train("independent", data, args.epochs, members=1)
    five, t_five = _train("independent", data, args.epochs, members=5)
    sngp, t_sngp = _train("sngp", data, args.epochs)
    ddu, t_ddu = _train("ddu", data, args.epochs)
    rows = []
    for structure in ("kfac", "full", "diag"):
        s = _best(lambda: fit_laplace(one.ensemble_, data.train, structure=structure, batch_size=256), args.repeats)
        rows.append((f"laplace {structure}, 1 network", s, t_one))
    s = _best(lambda: fit_laplace(five.ensemble_, data.train, structure="kfac", batch_size=256), args.repeats)
    rows.append(("laplace_ensemble kfac, 5 members", s, t_five))
    rows.append(("sngp GP covariance", _best(lambda: fit_gp_covariance(sngp.ensemble_, data.train, batch_size=256), args.repeats), t_sngp))
    ddu_net = ddu.ensemble_.ensemble
    rows.append(("ddu class-conditional Gaussians", _best(lambda: fit_ddu(ddu_net, data.train, batch_size=256), args.repeats), t_ddu))
    print(f"cnn1d on MNIST-1D ({len(data.train)} training examples), {args.epochs} epochs, torch threads {torch.get_num_threads()}")
    print(f"{'fit':36s} {'fit s':>8s} {'train s':>8s} {'fit/train':>9s}")
    for name, s, t in rows:
        print(f"{name:36s} {s:8.3f} {t:8.2f} {100 * s / t:8.1f}%")


if __name__ == "__main__":
    main()
