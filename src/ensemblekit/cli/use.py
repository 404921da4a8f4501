"""Using a trained ensemble: ``predict``, ``export``."""

from __future__ import annotations

import os
from typing import Optional

import typer

from ..errors import ConfigError
from .app import app, console


@app.command()
def predict(
    run_dir: str = typer.Argument(..., help="A run directory written by `train` (or a compare cell)."),
    data: str = typer.Option(..., "--data", help="Inputs: FILE.npz (array x), FILE.npy or FILE.csv (one example per row)."),
    out: Optional[str] = typer.Option(None, "--out", help="FILE.csv or FILE.npz (default: predictions.csv for .csv inputs, "
                                                          "else predictions.npz, in RUN_DIR)."),
    members: bool = typer.Option(False, "--members", help="Also write every member's probabilities (regression: means and stds)."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1, help="Examples per forward pass (memory stays flat)."),
    factory: Optional[str] = typer.Option(None, "--factory", help="pkg.mod:make_net building the members of a run trained on a user factory."),
    trust_factory: bool = typer.Option(False, "--trust-factory", help="Import the model factory path the ensemble file names."),
) -> None:
    """Predicted class, ensemble probabilities and each example's uncertainty (predictive and
    expected entropy, mutual information, member disagreement) for new inputs; for a regression
    run the mean, total, aleatoric and epistemic std and the 90%/95% interval bounds, in the
    targets' units.

    Never unpickles, and never imports code the files name unless told to.
    """
    from ..evaluation.predict import predict_file, predictor_input_shape
    from ..predictors import load_predictor

    path = os.path.join(run_dir, "ensemble.safetensors")
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir}: no ensemble.safetensors (has the run finished?)")
    if not os.path.isfile(data):
        raise ConfigError(f"--data {data}: no such file")
    if out is None:
        out = os.path.join(run_dir, "predictions.csv" if data.lower().endswith(".csv") else "predictions.npz")
    if not out.lower().endswith((".csv", ".npz")):
        raise ConfigError(f"--out {out}: must end in .csv or .npz")
    pred = load_predictor(path, trust_factory=trust_factory, factory=None if factory is None else user_factory(factory, path))
    shape = predictor_input_shape(pred)
    if shape is None:
        raise ConfigError(f"{path}: the ensemble does not record its input shape")
    summary = predict_file(pred, data, out, input_shape=shape, batch_size=batch_size, members=members)
    what = f"{summary['outputs']} target(s)" if "outputs" in summary else f"{summary['classes']} classes"
    console.print(f"{summary['examples']} example(s), {what}, {summary['members']} member(s) -> {out}")


def user_factory(factory: str, path: str, input_shape: Optional[tuple] = None, num_classes: Optional[int] = None):  # noqa: ANN202
    """The members' factory of a run trained on a user factory, from ``--factory pkg.mod:make_net``.

    The input shape and the head width (``num_classes``: C classes, or D targets for a regression
    run) are those the ensemble file recorded, else the ones given; the registered wrappers the
    file's model spec names (the ``gaussian`` mean-variance head of a regression run,
    ``dropconnect``, ...) are applied on top, as they were in training."""
    from ..models.registry import model_factory
    from ..serialization import load_metadata

    meta = load_metadata(path)
    groups = meta.get("groups") if isinstance(meta, dict) else None
    first = groups[0] if isinstance(groups, list) and groups else {}
    spec = first.get("spec") if isinstance(first, dict) else None
    spec = spec if isinstance(spec, dict) else {}
    kwargs = spec.get("kwargs") or {}
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    input_shape = kwargs.get("input_shape", input_shape)
    num_classes = kwargs.get("num_classes", num_classes)
    if input_shape is None or num_classes is None:
        raise ConfigError(f"{path}: no input shape / classes recorded for --factory")
    wrappers = {k: v for k, v in spec.items() if k not in ("name", "factory", "kwargs")}
    return model_factory({"factory": factory, **wrappers}, input_shape=tuple(input_shape), num_classes=int(num_classes))


@app.command("export")
def export_cmd(
    run_dir: str = typer.Argument(..., help="A run directory written by `train` (or a compare cell)."),
    format: str = typer.Option("export", "--format", help="export (torch.export, .pt2) | torchscript (.pt) | onnx (.onnx, the onnx extra)."),
    out: Optional[str] = typer.Option(None, "--out", help="The file to write (default: RUN_DIR/ensemble.<ext>)."),
    members: bool = typer.Option(False, "--members", help="The graph also returns every member's probabilities."),
    factory: Optional[str] = typer.Option(None, "--factory", help="pkg.mod:make_net building the members of a run trained on a user factory."),
    trust_factory: bool = typer.Option(False, "--trust-factory", help="Import the model factory path the ensemble file names."),
) -> None:
    """Write the ensemble as one graph (batch -> mean probabilities) that runs without ensemblekit."""
    from ..export import FORMATS, export
    from ..predictors import load_predictor

    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    path = os.path.join(run_dir, "ensemble.safetensors")
    if not os.path.isfile(path):
        raise ConfigError(f"{run_dir}: no ensemble.safetensors (has the run finished?)")
    out = out or os.path.join(run_dir, "ensemble" + FORMATS[format])
    pred = load_predictor(path, trust_factory=trust_factory, factory=None if factory is None else user_factory(factory, path))
    export(pred, out, format=format, members=members)
    console.print(f"{len(pred)} member(s) -> {out} ({format})")
