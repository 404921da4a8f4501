"""The uncertainty evaluation end to end: calibration by hand, held-out classes, OOD sets, the
``evaluation:`` block in train / compare / evaluate, and re-evaluation without retraining."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import ensemblekit as ek
from ensemblekit.errors import ConfigError, DataError

MLP = {"name": "mlp", "kwargs": {"hidden": [32]}}
TRAIN = {"epochs": 6, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}, "progress": False}


def test_temperature_scaling_recovers_known_temperatures():
    from ensemblekit.metrics.calibration import fit_member_temperatures, fit_temperature, fit_vector_scaling

    g = torch.Generator().manual_seed(0)
    z = 2.0 * torch.randn(20000, 10, generator=g)
    y = torch.distributions.Categorical(logits=z).sample()  # labels drawn from softmax(z): T = 1 is calibrated
    assert fit_temperature((3.0 * z).softmax(-1), y) == pytest.approx(3.0, rel=0.05)  # logits scaled by 3
    assert fit_temperature((0.5 * z).softmax(-1), y) == pytest.approx(0.5, rel=0.05)
    temps = fit_member_temperatures(torch.stack([3.0 * z, 0.5 * z, z]), y)  # one LBFGS run, each member its own T
    assert temps == pytest.approx([3.0, 0.5, 1.0], rel=0.05)
    w, b = fit_vector_scaling((3.0 * z).softmax(-1), y, l2=0.0)
    assert w.tolist() == pytest.approx([1 / 3] * 10, rel=0.1) and b.abs().max() < 0.1


def test_no_temperature_is_fitted_on_a_split_without_errors():
    """All correct: the NLL keeps falling as T -> 0 (digits' 95 validation examples: T -> 0.03 and the
    test NLL 0.009 -> 0.053); the fit keeps T = 1 for such a split or member, and fits the others."""
    from ensemblekit.metrics.calibration import fit_member_temperatures, fit_temperature

    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 5, (200,), generator=g)
    z = torch.randn(200, 5, generator=g)
    z[torch.arange(200), y] = z.max(-1).values + 1.0  # every argmax is the label
    assert fit_temperature(z.softmax(-1), y) == 1.0
    wrong = z.clone()
    wrong[torch.arange(20), y[:20]] -= 8.0  # 10% confident errors: over-confident, T > 1
    temps = fit_member_temperatures(torch.stack([z, wrong]), y)
    assert temps[0] == 1.0 and temps[1] == pytest.approx(fit_temperature(wrong.softmax(-1), y)) and temps[1] > 1.1


def test_the_one_pass_is_predict_proba_and_averages_tta_over_probabilities_and_logits_apart(blobs):
    from ensemblekit.evaluation.forward import predictive

    ens = ek.create_method("independent", model=MLP, members=3, epochs=1, progress=False).fit(blobs).ensemble_
    pd = predictive(ens, blobs.test)
    assert torch.equal(pd.probs, ens.predict_proba(blobs.test)) and torch.allclose(pd.logits.softmax(-1), pd.probs)
    small = predictive(ens, blobs.test, batch_size=7)  # batches of 7, concatenated in order
    assert torch.allclose(small.probs, pd.probs, atol=1e-6)
    with torch.no_grad():
        direct = ens(blobs.test.x)
    assert torch.allclose(pd.logits, direct, atol=1e-6)
    flips = [lambda x: x, lambda x: -x]
    p2 = predictive(ens, blobs.test, flips)
    assert torch.allclose(p2.probs, (ens.predict_proba(blobs.test.x) + ens.predict_proba(-blobs.test.x)) / 2)
    with torch.no_grad():
        assert torch.allclose(p2.logits, (ens(blobs.test.x) + ens(-blobs.test.x)) / 2, atol=1e-6)
    # the mean of the probabilities, not the softmax of the mean logits
    assert not torch.allclose(p2.probs, p2.logits.softmax(-1), atol=1e-4)
    assert torch.equal(p2.pooled(), p2.probs.mean(0)) and p2.prefix(2).num_members == 2
    ens.train()
    predictive(ens, blobs.test)
    assert ens.training


def test_every_part_equals_its_reference_computation(blobs):
    from ensemblekit.data.ood import ood_inputs
    from ensemblekit.evaluation.forward import predictive
    from ensemblekit.evaluation.run import evaluate_uncertainty
    from ensemblekit.metrics.calibration import fit_temperature, scale_probs
    from ensemblekit.metrics.classification import ece, nll
    from ensemblekit.metrics.conformal import split_conformal
    from ensemblekit.metrics.ood import detection_metrics, uncertainty_scores
    from ensemblekit.metrics.selective import aurc

    ens = ek.create_method("independent", model=MLP, members=3, epochs=15, progress=False).fit(blobs).ensemble_
    res = evaluate_uncertainty(ens, blobs, {"ood": ["constant"], "shift": True, "conformal": {"alpha": 0.2, "scores": ["thr", "raps"]}})
    (pv, zv), (pt, zt) = ((pd.probs, pd.logits) for pd in (predictive(ens, blobs.val), predictive(ens, blobs.test)))
    y, yv = blobs.test.y, blobs.val.y
    cal = res["calibration"]
    t = fit_temperature(pv.mean(0), yv)
    assert cal["pool_then_calibrate"]["temperature"] == pytest.approx(t)
    assert cal["pool_then_calibrate"]["nll"] == pytest.approx(float(nll(scale_probs(pt.mean(0), t), y)))
    assert cal["raw"]["nll"] == pytest.approx(float(nll(pt.mean(0), y)))
    tm = torch.tensor(cal["calibrate_then_pool"]["temperatures"], dtype=torch.float64).view(3, 1, 1)
    by_hand = torch.softmax(zt.double() / tm, -1).mean(0)
    assert cal["calibrate_then_pool"]["nll"] == pytest.approx(float(nll(by_hand, y)))
    assert cal["calibrate_then_pool"]["ece"] == pytest.approx(float(ece(by_hand, y)))
    scores = uncertainty_scores(pt, zt)
    correct = pt.mean(0).argmax(-1) == y
    assert res["selective"]["scores"]["mi"]["aurc"] == pytest.approx(aurc(-scores["mi"], correct))
    assert res["selective"]["scores"]["msp"]["error_rate"] == pytest.approx(1.0 - float(correct.double().mean()))
    pc, zc = (lambda pd: (pd.probs, pd.logits))(predictive(ens, ood_inputs(blobs, "constant")))
    assert res["ood"]["constant"]["scores"]["energy"] == pytest.approx(detection_metrics(scores["energy"], uncertainty_scores(pc, zc)["energy"]))
    assert res["ood"]["constant"]["size"] == len(blobs.test)
    assert res["conformal"]["raps"] == split_conformal(pv.mean(0), yv, pt.mean(0), y, alpha=0.2, score="raps")
    sh = res["shift"]  # feature vectors: gaussian noise and amplitude scaling
    assert list(sh["corruptions"]) == ["gaussian_noise", "amplitude_scale"]
    noise = sh["corruptions"]["gaussian_noise"]["accuracy"]
    assert noise[-1] < sh["clean"]["accuracy"] - 0.02 and noise[-1] <= noise[0]
    assert sh["by_severity"]["accuracy"][2] == pytest.approx((noise[2] + sh["corruptions"]["amplitude_scale"]["accuracy"][2]) / 2)
    json.dumps(res)  # JSON-able as written into results.json


def test_held_out_classes_relabel_every_split_and_keep_the_ood_examples():
    from ensemblekit.data.ood import hold_out_classes

    full = ek.load_dataset("digits")
    data = hold_out_classes(full, [9, 7, 8])
    assert data.num_classes == 7 and data.info["held_out_classes"] == [7, 8, 9] and data.info["num_classes_original"] == 10
    for split, orig in ((data.train, full.train), (data.val, full.val), (data.test, full.test)):
        keep = orig.y < 7
        assert torch.equal(split.x, orig.x[keep]) and torch.equal(split.y, orig.y[keep])  # classes 0-6 keep their labels
    assert torch.equal(data.held_out.x, full.test.x[full.test.y >= 7]) and set(data.held_out.y.tolist()) == {7, 8, 9}
    relabel = hold_out_classes(full, [0, 5])
    assert relabel.info["class_map"] == {"1": 0, "2": 1, "3": 2, "4": 3, "6": 4, "7": 5, "8": 6, "9": 7}
    assert torch.equal(relabel.train.y, torch.tensor([relabel.info["class_map"][str(c)] for c in full.train.y[(full.train.y != 0) & (full.train.y != 5)].tolist()]))
    with pytest.raises(ConfigError, match=r"\[10\] are not classes of digits"):
        hold_out_classes(full, [10])
    with pytest.raises(ConfigError, match="at least two must remain"):
        hold_out_classes(full, list(range(1, 10)))


def test_synthetic_ood_sets_are_deterministic_and_what_they_say(tmp_path):
    from ensemblekit.data.ood import load_ood_npz, ood_inputs

    data = ek.load_dataset("digits")
    lo, hi = float(data.train.x.min()), float(data.train.x.max())
    noise = ood_inputs(data, "noise", size=50, seed=3)
    assert noise.shape == (50, 1, 8, 8) and lo <= float(noise.min()) and float(noise.max()) <= hi
    assert torch.equal(noise, ood_inputs(data, "noise", size=50, seed=3)) and not torch.equal(noise, ood_inputs(data, "noise", size=50, seed=4))
    const = ood_inputs(data, "constant", size=20)
    assert torch.equal(const, const[:, :1, :1, :1].expand_as(const))
    perm = ood_inputs(data, "permuted", size=30).reshape(30, -1)
    train = data.train.x.reshape(len(data.train), -1)
    sorted_train = train.sort(-1).values
    for row in perm.sort(-1).values:  # each is a training image with its pixels shuffled
        assert (sorted_train == row).all(-1).any()
    assert not any((train == row).all(-1).any() for row in perm)
    np.savez(tmp_path / "o.npz", x=np.ones((4, 1, 8, 8)), y=np.zeros(4))
    assert torch.equal(ood_inputs(data, {"npz": str(tmp_path / "o.npz")}), torch.ones(4, 1, 8, 8))
    np.savez(tmp_path / "bad.npz", x=np.ones((4, 64)))
    with pytest.raises(DataError, match=r"expected \(N, 1, 8, 8\)"):
        load_ood_npz(str(tmp_path / "bad.npz"), (1, 8, 8))


def _run_config(tmp_path, evaluation):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"data": "digits", "model": MLP, "method": {"name": "independent", "members": 3}, "train": TRAIN,
                                   "evaluation": evaluation, "out": str(tmp_path / "runs")}))
    return cfg


def test_train_with_held_out_classes_then_evaluate_the_run_later(tmp_path, cli, capsys):
    cfg = _run_config(tmp_path, {"ood": [{"held_out_classes": [7, 8, 9]}]})
    assert cli("train", cfg, "--run-dir", tmp_path / "run") == 0
    row = json.loads((tmp_path / "run" / "results.json").read_text())
    assert row["data"]["num_classes"] == 7 and row["data"]["info"]["held_out_classes"] == [7, 8, 9]
    assert "held-out OOD set" in row["data"]["info"]["note"]
    held = row["evaluation"]["ood"]["held_out_7-8-9"]
    assert held["size"] == 102 and held["in_size"] == 257  # the test split of digits: 102 examples of 7-9, 257 of 0-6
    assert held["scores"]["msp"]["auroc"] > 0.75  # a trained net is less sure of digits it never saw
    capsys.readouterr()
    assert cli("evaluate", tmp_path / "run", "--shift", "--ood", "held_out,noise", "--calibrate", "--conformal", "0.1") == 0
    out = capsys.readouterr().out
    assert "OOD detection" in out and "shift" in out and "conformal" in out
    ev = json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())
    assert ev["ood"]["held_out_7-8-9"]["scores"]["msp"] == held["scores"]["msp"]  # the same run, the same answer
    assert set(ev["ood"]) == {"held_out_7-8-9", "noise"} and len(ev["shift"]["corruptions"]) == 9
    assert set(ev["conformal"]) == {"thr", "aps", "raps"}
    acc = ev["shift"]["by_severity"]["accuracy"]
    assert acc[-1] < acc[0] < ev["shift"]["clean"]["accuracy"]  # harder corruptions, lower accuracy
    assert (tmp_path / "run" / "evaluation" / "ood_scores.png").exists() and (tmp_path / "run" / "evaluation" / "shift.png").exists()


def test_evaluate_refuses_held_out_on_a_run_trained_on_every_class(tmp_path, cli, capsys):
    cfg = _run_config(tmp_path, {})
    assert cli("train", cfg, "--run-dir", tmp_path / "run") == 0
    capsys.readouterr()
    assert cli("evaluate", tmp_path / "run", "--ood", "held_out") == 2
    err = capsys.readouterr().err
    assert "trained on every class" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "evaluation").exists()


def test_compare_reevaluates_a_finished_cell_without_retraining_when_only_the_evaluation_changes(blobs, tmp_path, monkeypatch):
    from ensemblekit.config import CompareConfig
    from ensemblekit.experiments.compare import run_compare
    from ensemblekit.experiments.units import StaleResultError
    from ensemblekit.methods.base import Method

    base = {"data": "digits", "model": MLP, "train": {**TRAIN, "epochs": 2}, "budgets": [1], "seeds": [0],
            "methods": [{"name": "independent", "label": "Ind", "members": 2}]}
    first = run_compare(CompareConfig(**base), str(tmp_path), data=blobs)
    assert "ood" not in first.rows[0]["evaluation"]
    weights = (tmp_path / "cells" / "Ind-b1-s0" / "ensemble.safetensors").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("retrained a cell whose training did not change")

    monkeypatch.setattr(Method, "fit", no_training)
    second = run_compare(CompareConfig(**{**base, "evaluation": {"ood": ["noise"], "conformal": True}}), str(tmp_path), data=blobs)
    row = second.rows[0]
    assert set(row["evaluation"]["ood"]) == {"noise"} and "aps" in row["evaluation"]["conformal"]
    assert row["wall_s"] == first.rows[0]["wall_s"] and (tmp_path / "cells" / "Ind-b1-s0" / "ensemble.safetensors").read_bytes() == weights
    assert "OOD detection at 1B, noise: AUROC (%)" in second.markdown and "Conformal sets (APS" in second.markdown
    assert json.loads((tmp_path / "cells" / "Ind-b1-s0" / "results.json").read_text())["evaluation"]["hash"] == row["evaluation"]["hash"]
    with pytest.raises(StaleResultError):  # held-out classes change what the cells train on
        run_compare(CompareConfig(**{**base, "evaluation": {"ood": [{"held_out_classes": [2]}]}}), str(tmp_path), data=blobs)


class _Scored:
    """A predictor that scores its examples itself (as a DDU does): the norm of each input."""

    def __init__(self, ens):
        self.ens, self.readout, self.training = ens, ens.readout, False
        self.members_info = ens.members_info

    device = property(lambda self: self.ens.device)
    num_members = property(lambda self: self.ens.num_members)

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def logits(self, x):
        return self.ens.logits(x)

    def example_scores(self, x):
        return {"density": x.flatten(1).norm(dim=1)}


def test_a_predictors_own_score_reaches_the_ood_tables_and_only_its_rows(blobs):
    """``example_scores`` -> Categorical.extras -> the OOD and selective parts; a plain ensemble asked for
    the same score has none (left out, not an error), and TTA averages the score like the probabilities."""
    from ensemblekit.evaluation.forward import predictive
    from ensemblekit.evaluation.run import evaluate_uncertainty

    ens = ek.create_method("independent", model=MLP, members=2, epochs=1, progress=False).fit(blobs).ensemble_
    scored = _Scored(ens)
    x = blobs.test.x
    pd = predictive(scored, x, batch_size=7)
    assert torch.allclose(pd.extras["density"], x.flatten(1).norm(dim=1).double())
    assert set(pd.scores(["msp", "density"])) == {"msp", "density"} and list(predictive(ens, x).scores(["msp", "density"])) == ["msp"]
    assert pd.prefix(1).extras == {} and set(pd.prefix(2).extras) == {"density"}
    tta = predictive(scored, x, tta=[lambda t: t, lambda t: 3 * t])  # mean of |x| and |3x| = 2|x|
    assert torch.allclose(tta.extras["density"], 2 * x.flatten(1).norm(dim=1).double(), atol=1e-5)
    cfg = {"ood": ["noise"], "scores": ["msp", "density"], "selective": True}
    mine, plain = evaluate_uncertainty(scored, blobs, cfg), evaluate_uncertainty(ens, blobs, cfg)
    assert set(mine["ood"]["noise"]["scores"]) == {"msp", "density"} and set(plain["ood"]["noise"]["scores"]) == {"msp"}
    assert set(mine["selective"]["scores"]) == {"msp", "density"}
    assert mine["ood"]["noise"]["scores"]["msp"] == plain["ood"]["noise"]["scores"]["msp"]
