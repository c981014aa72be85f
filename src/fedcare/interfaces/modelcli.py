"""`fedcare predict` and `fedcare export`: a finished run's model put to use, from its run folder alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from fedcare.core.errors import ConfigError

Opt = typer.Option


def model_path(run: Path, site: str | None) -> Path:
    """The run's global model, or the personalized model of `site`."""
    from fedcare.federation.runfolder import file_stem

    if site is None:
        return run / "global.safetensors"
    path = run / "sites" / f"{file_stem(site)}.safetensors"
    if not path.is_file():
        have = sorted(p.stem for p in (run / "sites").glob("*.safetensors")) if (run / "sites").is_dir() else []
        raise ConfigError(f"'{run}' holds no personalized model for site '{site}'; "
                          + (f"sites with one: {', '.join(have)}" if have else "this run has none (drop --site)"))
    return path


def register(app: typer.Typer, console: Console) -> None:
    @app.command()
    def predict(
        run: Annotated[Path, typer.Argument(help="run folder of a finished fedcare run")],
        data: Annotated[Path, Opt(help="CSV/Parquet file of patients (the training table's feature columns)")],
        site: Annotated[Optional[str], Opt(help="use this site's personalized model (default: the global model)")] = None,
        out: Annotated[Optional[Path], Opt(help="CSV to write (default <run>/predictions.csv)")] = None,
    ) -> None:
        """Score new patients with the run's model: class probabilities and the predicted class, a value
        (regression) or the log relative hazard and survival curves (survival); the run's own
        preprocessing encodes them."""
        from fedcare.data.readers import read_table
        from fedcare.learning.modelfile import load_model

        model = load_model(model_path(run, site))
        table = model(read_table(data))
        target = out or run / "predictions.csv"
        table.to_csv(target, index=False)
        console.print(escape(table.head(10).to_string(float_format=lambda v: f"{v:.3f}")))
        if model.card.shape.task == "survival" and not model.card.baseline_hazard:
            why = "personalized models do not carry one" if site else "networked runs do not collect it yet"
            console.print(f"this run has no baseline hazard ({why}): risk only, no survival curves",
                          soft_wrap=True)
        console.print(f"{len(table)} patients scored with the {escape(site or 'global')} model · written to "
                      f"{escape(str(target))}")

    @app.command()
    def export(
        run: Annotated[Path, typer.Argument(help="run folder of a finished fedcare run")],
        format: Annotated[str, Opt("--format", help="onnx | torchscript")] = "onnx",
        site: Annotated[Optional[str], Opt(help="export this site's personalized model (default: the global model)")] = None,
        out: Annotated[Optional[Path], Opt(help="file to write (default <run>/model.onnx or model.pt)")] = None,
    ) -> None:
        """Write the model for serving (table inputs only): it takes each input's encoded float32 array
        and returns class probabilities, the value or the log relative hazard."""
        from fedcare.learning.export import export_model
        from fedcare.learning.modelfile import load_model

        model = load_model(model_path(run, site))
        target = out or run / ("model.onnx" if format == "onnx" else "model.pt")
        export_model(model, format, target)
        inputs = ", ".join(f"{n} ({s.shape[0]} features)" for n, s in model.card.shape.inputs.items())
        console.print(f"written: {escape(str(target))} · inputs: {escape(inputs)}")
