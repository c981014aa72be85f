"""The `fedcare` command: simulate a federation, list datasets. Bad input → one line, exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from fedcare.core.errors import ConfigError, FedcareError
from fedcare.interfaces.cliout import OUTPUT, RoundProgress, setup as setup_output, with_config_defaults

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Federated learning across hospitals: each site trains on its own patients.")
console = Console(soft_wrap=True)  # a long path stays one line a user can copy

Opt = typer.Option


# ----- CLI manners: --version, --quiet, --verbose, --log-file (interfaces/cliout.py) -----
def _version(value: bool) -> None:
    if value:
        from fedcare import __version__

        print(f"fedcare {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, Opt("--version", callback=_version, is_eager=True, help="print the version and exit")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress and no tables: warnings, errors and the result's place")] = False,
    verbose: Annotated[bool, Opt("--verbose", "-v", help="debug messages on the terminal")] = False,
    log_file: Annotated[Optional[Path], Opt(help="also write every message (third-party warnings included) to this file")] = None,
) -> None:
    setup_output(quiet, verbose, log_file)


@app.command()
def simulate(
    config: Annotated[Optional[Path], Opt("--config", help="YAML file with any of the keys below")] = None,
    resume: Annotated[Optional[Path], Opt("--resume", help="continue the run in this folder from its last checkpoint")] = None,
    dataset: Annotated[Optional[str], Opt(help="built-in dataset (see `fedcare datasets`)")] = None,
    data: Annotated[Optional[list[Path]], Opt(help="CSV/Parquet file; repeat for one file per site")] = None,
    site: Annotated[Optional[str], Opt(help="site column in --data")] = None,
    label: Annotated[Optional[str], Opt(help="label column in --data")] = None,
    time: Annotated[Optional[str], Opt(help="survival: time-to-event column (with --event, instead of --label)")] = None,
    event: Annotated[Optional[str], Opt(help="survival: event column (1 = event, 0 = censored)")] = None,
    task: Annotated[Optional[str], Opt(help="binary | multiclass | regression | survival | segmentation, or an installed "
                                            "package's task (default: inferred)")] = None,
    drop: Annotated[Optional[list[str]], Opt(help="identifier column to drop; repeatable")] = None,
    categorical: Annotated[Optional[list[str]], Opt(help="column to treat as categorical; repeatable")] = None,
    omics_columns: Annotated[Optional[list[str]], Opt(help="column or pattern (e.g. 'gene_*') of the omics input, "
                                                           "standardised gene by gene; repeatable")] = None,
    treatment: Annotated[Optional[str], Opt(help="arm column: estimate each arm's effect against the control")] = None,
    control: Annotated[Optional[str], Opt(help="control arm (default: the first arm in sorted order)")] = None,
    propensity: Annotated[Optional[float], Opt(help="known probability of each treated arm (randomised trial); "
                                                   "default: learned")] = None,
    learner: Annotated[Optional[list[str]], Opt(help="CATE learner with --treatment: t | s | dr (repeatable) or none "
                                                    "(default: all three)")] = None,
    outcome_better: Annotated[Optional[str], Opt(help="higher | lower: which outcome the recommended arm aims for "
                                                      "(default higher)")] = None,
    images: Annotated[Optional[list[Path]], Opt(help="image manifest CSV/Parquet: path, label or mask, site, patient; "
                                                 "with --data, the image input joined by --patient (one per site: repeat)")] = None,
    omics: Annotated[Optional[list[Path]], Opt(help="gene-expression file joined to --data by --patient (one per site: "
                                                "repeat); docs/multimodal.md")] = None,
    image_size: Annotated[Optional[list[int]], Opt(help="resample images to this size; repeat per axis (--image-size 64 --image-size 64)")] = None,
    skip_bad_images: Annotated[Optional[bool], Opt("--skip-bad-images", help="skip and count unreadable images")] = None,
    image_model: Annotated[Optional[str], Opt(help="cnn | densenet121 | resnet18 | unet | basicunet")] = None,
    patient: Annotated[Optional[str], Opt(help="patient id column: a patient's rows stay in one split")] = None,
    partition: Annotated[Optional[str], Opt(help="iid | dirichlet | quantity, for one file without sites")] = None,
    num_sites: Annotated[Optional[int], Opt(help="sites to partition into")] = None,
    alpha: Annotated[Optional[float], Opt(help="skew of dirichlet/quantity partitions")] = None,
    test_fraction: Annotated[Optional[float], Opt(help="test share of each site's rows (default 0.34, FLamby)")] = None,
    split_seed: Annotated[Optional[int], Opt(help="seed of the train/test split (default 43, FLamby)")] = None,
    partition_seed: Annotated[Optional[int], Opt(help="seed of --partition")] = None,
    val_fraction: Annotated[Optional[float], Opt(help="validation share of each site's training rows")] = None,
    algorithm: Annotated[Optional[str], Opt(help="fedsgd | fedavg | fedprox | scaffold | cyclic | fedadam | fedyogi | fedadagrad")] = None,
    prox_mu: Annotated[Optional[float], Opt(help="FedProx proximal weight μ (default 0.01)")] = None,
    personalization: Annotated[Optional[str], Opt(help="none | finetune | fedper | fedrep | fedbn | ditto")] = None,
    ditto_lambda: Annotated[Optional[float], Opt(help="Ditto: pull towards the global model (default 0.1)")] = None,
    finetune_epochs: Annotated[Optional[int], Opt(help="epochs of final local fine-tuning (default 5)")] = None,
    model: Annotated[Optional[str], Opt(help="linear (logistic) | mlp | fusion (one encoder per input)")] = None,
    fusion: Annotated[Optional[str], Opt(help="model fusion: intermediate | late")] = None,
    modality_dropout: Annotated[Optional[float], Opt(help="model fusion: chance of hiding a patient's input in training")] = None,
    hidden: Annotated[Optional[list[int]], Opt(help="MLP hidden width; repeat per layer")] = None,
    batch_norm: Annotated[Optional[bool], Opt("--batch-norm/--no-batch-norm", help="MLP with batch norm (for fedbn)")] = None,
    optimizer: Annotated[Optional[str], Opt(help="local optimizer: sgd | adam")] = None,
    rounds: Annotated[Optional[int], Opt(help="maximum rounds")] = None,
    local_epochs: Annotated[Optional[int], Opt(help="local epochs per round (fedavg)")] = None,
    threads: Annotated[Optional[int], Opt(help="PyTorch threads for local training (default 1)")] = None,
    batch_size: Annotated[Optional[int], Opt(help="local minibatch size")] = None,
    lr: Annotated[Optional[float], Opt(help="learning rate (local, or the server step for fedsgd)")] = None,
    server_lr: Annotated[Optional[float], Opt(help="server learning rate (default 1.0 = plain FedAvg; 0.01 for fedadam/fedyogi/fedadagrad)")] = None,
    server_momentum: Annotated[Optional[float], Opt(help="server momentum (0 = none)")] = None,
    weighting: Annotated[Optional[str], Opt(help="examples | uniform: how updates are weighted")] = None,
    site_weight: Annotated[Optional[list[str]], Opt(help="per-site quality weight SITE=W; repeatable")] = None,
    aggregator: Annotated[Optional[str], Opt(help="mean | median | trimmed-mean | krum | centered-clip")] = None,
    trim_beta: Annotated[Optional[float], Opt(help="share trimmed at each end by trimmed-mean")] = None,
    krum_f: Annotated[Optional[int], Opt(help="hostile sites Krum tolerates")] = None,
    krum_m: Annotated[Optional[int], Opt(help="updates Krum averages (default n − f)")] = None,
    clip_tau: Annotated[Optional[float], Opt(help="centered-clip radius (default: median distance)")] = None,
    norm_bound: Annotated[Optional[float], Opt(help="clip updates to this multiple of the median norm")] = None,
    attack: Annotated[Optional[str], Opt(help="simulate attackers: sign-flip | scale | gaussian | label-flip | nan")] = None,
    attackers: Annotated[Optional[list[str]], Opt(help="number of attacking sites (the K largest), or a site id; repeatable")] = None,
    attack_scale: Annotated[Optional[float], Opt(help="factor of 'scale', std of 'gaussian'")] = None,
    fraction: Annotated[Optional[float], Opt(help="share of sites selected per round")] = None,
    min_sites: Annotated[Optional[int], Opt(help="fewest sites a round may use")] = None,
    patience: Annotated[Optional[int], Opt(help="stop after this many rounds without validation gain")] = None,
    dp_epsilon: Annotated[Optional[float], Opt(help="record-level DP: each site's ε budget for the run (DP-SGD)")] = None,
    dp_delta: Annotated[Optional[float], Opt(help="record-level DP: δ (default 1e-5)")] = None,
    dp_clip: Annotated[Optional[float], Opt(help="record-level DP: per-patient gradient norm bound (default 1)")] = None,
    site_dp_epsilon: Annotated[Optional[float], Opt(help="site-level DP (DP-FedAvg): the run's ε budget for each hospital's participation")] = None,
    site_dp_delta: Annotated[Optional[float], Opt(help="site-level DP: δ (default 1e-5)")] = None,
    site_dp_clip: Annotated[Optional[float], Opt(help="site-level DP: update norm bound C, or its start with --site-dp-clip-quantile (default 1)")] = None,
    site_dp_clip_quantile: Annotated[Optional[float], Opt(help="site-level DP: adapt C to this quantile of the update norms")] = None,
    secure_aggregation: Annotated[Optional[bool], Opt("--secure-aggregation/--no-secure-aggregation", help="the coordinator sees only the sum of the updates")] = None,
    secagg_max_dropouts: Annotated[Optional[int], Opt(help="secure aggregation: sites that may drop after masking (default 0)")] = None,
    compress_updates: Annotated[Optional[str], Opt(help="how updates travel: none | fp16 | bf16 | int8[:B] | int4[:B] | topk:F[+fp16|bf16|int8|int4]")] = None,
    compress_broadcast: Annotated[Optional[str], Opt(help="how the model travels to the sites: none | fp16 | bf16 | int8[:B] | int4[:B]")] = None,
    compress_range: Annotated[Optional[float], Opt(help="secure aggregation with int8/int4: the bound on each update coordinate they scale to")] = None,
    error_feedback: Annotated[Optional[bool], Opt("--error-feedback/--no-error-feedback", help="sites carry what compression dropped into their next update")] = None,
    baselines: Annotated[Optional[bool], Opt("--baselines/--no-baselines", help="run local and pooled baselines")] = None,
    checkpoint_every: Annotated[Optional[int], Opt(help="write a resumable checkpoint every N rounds (0 = never)")] = None,
    eval_every: Annotated[Optional[int], Opt(help="evaluate the global model every N rounds and after the last (default 1)")] = None,
    eval_sites: Annotated[Optional[int], Opt(help="evaluate a seeded sample of N sites per evaluated round (default 0: all)")] = None,
    seed: Annotated[Optional[int], Opt(help="training seed")] = None,
    out: Annotated[Optional[Path], Opt(help="run folder (default runs/<dataset>-<algorithm>-seed<seed>)")] = None,
    backend: Annotated[Optional[str], Opt(help="in-process | processes | ray: where the sites run (see docs/scale.md)")] = None,
    workers: Annotated[Optional[int], Opt(help="processes/ray: workers, each hosting a shard of sites (default: the CPUs)")] = None,
    ray_address: Annotated[Optional[str], Opt(help="ray: a running cluster's host:port (default: start one here)")] = None,
    batched: Annotated[Optional[bool], Opt("--batched/--no-batched", help="train the sites (of this process or a worker) together with torch.func where the algorithm allows")] = None,
    device: Annotated[Optional[str], Opt(help="cpu | cuda: where batched sites train")] = None,
    # ----- headline metric and tracking (core/config/evaluation.py, tracking.py) -----
    metric: Annotated[Optional[str], Opt(help="headline and early-stopping metric: accuracy | balanced_accuracy | "
                                             "roc_auc | log_loss | brier | sensitivity | specificity | c_index | "
                                             "rmse | mae (default: the task's own)")] = None,
    threshold: Annotated[Optional[float], Opt(help="binary: probability from which sensitivity and specificity "
                                                  "call a patient positive")] = None,
    track: Annotated[Optional[list[str]], Opt(help="also send every round's metrics to mlflow[:URI] or "
                                                  "tensorboard[:DIR]; repeatable")] = None,
    # ----- streams and drift (core/config/stream.py, federation/stream.py) -----
    time_column: Annotated[Optional[str], Opt(help="replay --data in the order of this column, window by window: "
                                                   "frozen, continued and retrained compared")] = None,
    windows: Annotated[Optional[int], Opt(help="with --time-column: this many windows of about equal rows")] = None,
    window: Annotated[Optional[str], Opt(help="with --time-column holding dates: a window's length (90d, 12w, 1y)")] = None,
    rounds_per_window: Annotated[Optional[int], Opt(help="continued: at most this many rounds per window (default 5)")] = None,
    window_patience: Annotated[Optional[int], Opt(help="continued: end a window's rounds after this many without "
                                                       "validation gain (needs --val-fraction)")] = None,
    window_metric: Annotated[Optional[str], Opt(help="the validation metric --window-patience reads (default: "
                                                     "the headline), e.g. neg_partial_loglik or log_loss")] = None,
    window_lrs: Annotated[Optional[list[float]], Opt(help="continued: try each learning rate per window from the "
                                                          "same warm start, keep the best on validation; repeatable "
                                                          "(needs --window-patience)")] = None,
    replay_windows: Annotated[Optional[int], Opt(help="a site trains only on its last N windows (default: all)")] = None,
    drift_threshold: Annotated[Optional[float], Opt(help="drift notice when a site's metric drops by more (default 0.05)")] = None,
    drift_smd: Annotated[Optional[float], Opt(help="drift notice when a feature's standardised mean difference "
                                                   "reaches this (default 0.5)")] = None,
) -> None:
    """Run a federation in this process, with its local and pooled baselines, and write a run folder."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "resume") and v is not None}
    if "data" in flags:
        flags["data"] = [str(p) for p in flags["data"]]
    _joined_inputs(flags)
    if "out" in flags:
        flags["out"] = str(flags["out"])
    if "site_weight" in flags:
        flags["site_weights"] = _site_weights(flags.pop("site_weight"))
    from fedcare.core.config import load_config, resolve_config

    # the config is checked before torch and pandas are imported: a wrong flag is refused at once
    if resume is not None:
        cfg = load_config(resume / "config.yaml", {"out": str(resume)})
    else:
        cfg = resolve_config(config, **flags) if config else resolve_config(flags)
    from fedcare.interfaces.api import resume as resume_run, simulate as run_simulation
    from fedcare.interfaces.report import cate_table, site_table, treatment_table

    on_round = RoundProgress(console, cfg.algorithm.rounds, cfg.evaluation.metric or "")
    try:
        run = resume_run(resume, progress=on_round) if resume is not None else run_simulation(cfg, progress=on_round)
    finally:
        on_round.stop()
    if OUTPUT.quiet:
        console.print(f"run folder: {run.path}")
        return
    if "stream" in run.summary:
        from fedcare.interfaces.streamrun import stream_table

        console.print(stream_table(run.summary))
        for notice in run.summary["drift"]["notices"]:
            console.print(f"[yellow]drift:[/] window {notice['window']} at {escape(notice['site_id'])}: "
                          f"{', '.join(notice['tests'])}")
        console.print(f"run folder: {run.path}  ·  {run.summary['wall_seconds']:.1f} s")
        return
    console.print(site_table(run.summary))
    if "treatment" in run.summary:
        console.print(treatment_table(run.summary["treatment"]))
        if "cate" in run.summary["treatment"]:
            console.print(cate_table(run.summary["treatment"]["cate"]))
        if "outcome_better" not in flags and cfg.effects.outcome_better == "higher":
            label = run.summary["preprocessing"]["label"]["column"]
            console.print(f"note: the recommended arm is the one with the highest predicted '{label}'; pass "
                          "--outcome-better lower if a higher value is harm")
    attack, flagged = run.summary["attack"], run.summary["anomalies"]["flagged_sites"]
    if attack["kind"]:
        console.print(f"simulated attack: {attack['kind']} from {', '.join(attack['sites'])}")
    if attack["kind"] or flagged:
        console.print(f"flagged in more than half of the rounds: {', '.join(flagged) or 'none'}")
    for warning in run.summary.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(f"run folder: {run.path}  ·  {run.summary['rounds']} rounds  ·  "
                  f"{run.summary['bytes_sent'] / 1e6:.2f} MB sent  ·  {run.summary['wall_seconds']:.1f} s")


# ----- several files per patient (data/multimodal.py, docs/multimodal.md) -----
def _joined_inputs(flags: dict) -> None:
    """--omics and, with --data, --images become the config's `inputs` list; --images alone stays the
    manifest of an image-only dataset."""
    joined = [{"kind": kind, "file": [str(p) for p in flags.pop(key)]}
              for kind, key in (("omics", "omics"), ("image", "images"))
              if key in flags and (key == "omics" or "data" in flags)]
    if joined:
        flags["inputs"] = joined
    if "images" in flags:
        if len(flags["images"]) != 1:
            raise ConfigError("--images without --data takes one manifest (with a site column); repeat it only "
                              "with --data, one per site")
        flags["images"] = str(flags["images"][0])


def _site_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        site, sep, value = item.partition("=")
        try:
            weights[site] = float(value)
        except ValueError:
            sep = ""
        if not sep or not site:
            raise ConfigError(f"--site-weight takes SITE=NUMBER, not '{item}'")
    return weights


@app.command()
def benchmark(
    algorithms: Annotated[str, Opt(help="comma-separated entries ALGORITHM[+PERSONALIZATION][@AGGREGATOR], "
                                        "e.g. fedavg,fedprox,fedavg+ditto,fedavg@median")] = "fedsgd,fedavg",
    seeds: Annotated[int, Opt(help="training seeds per entry")] = 5,
    workers: Annotated[int, Opt(help="processes in parallel (default: the machine's cores)")] = 0,
    tune: Annotated[bool, Opt("--tune/--no-tune", help="choose learning rates on validation rows first")] = False,
    out: Annotated[Path, Opt(help="folder for table.md, table.csv, report.html, curves.svg and the runs")] = Path("runs/benchmark"),
    config: Annotated[Optional[Path], Opt("--config", help="YAML with the shared settings (dataset, rounds, ...)")] = None,
    dataset: Annotated[Optional[str], Opt(help="built-in dataset")] = None,
    data: Annotated[Optional[list[Path]], Opt(help="CSV/Parquet file(s)")] = None,
    site: Annotated[Optional[str], Opt(help="site column")] = None,
    label: Annotated[Optional[str], Opt(help="label column")] = None,
    time: Annotated[Optional[str], Opt(help="survival: time column")] = None,
    event: Annotated[Optional[str], Opt(help="survival: event column")] = None,
    rounds: Annotated[Optional[int], Opt(help="maximum rounds")] = None,
    local_epochs: Annotated[Optional[int], Opt(help="local epochs per round")] = None,
    attack: Annotated[Optional[str], Opt(help="simulate attackers: sign-flip | scale | gaussian | label-flip | nan")] = None,
    attackers: Annotated[Optional[list[str]], Opt(help="number of attacking sites, or a site id; repeatable")] = None,
) -> None:
    """Run entries × seeds in parallel and write the evidence table (Markdown, CSV) and a plot."""
    import os

    from fedcare.interfaces.api import resolve_config
    from fedcare.interfaces.bench import run_benchmark

    flags = {k: v for k, v in dict(dataset=dataset, site=site, label=label, time=time, event=event,
                                   rounds=rounds, local_epochs=local_epochs, attack=attack,
                                   attackers=attackers).items() if v is not None}
    if data:
        flags["data"] = [str(p) for p in data]
    base = resolve_config(config, **flags) if config else resolve_config(flags)
    entries = [e for e in algorithms.split(",") if e.strip()]
    with console.status(f"running {len(entries)} entries × {seeds} seeds"):
        result = run_benchmark(base, entries, seeds, workers or os.cpu_count() or 1, out, tune=tune)
    print(result["table"])  # Markdown: printed as is, never wrapped
    console.print(f"written: {out / 'table.md'}, {out / 'table.csv'}, {out / 'report.html'}, {out / 'curves.svg'}")


@app.command()
def datasets() -> None:
    """List the built-in datasets with their sites and sizes."""
    from rich.table import Table

    from fedcare.data import dataset_info

    for info in dataset_info():
        console.print(f"[bold]{info['name']}[/bold] ({info['task']}): {escape(info['description'])}")
        table = Table()
        table.add_column("site")
        table.add_column("rows", justify="right")
        for s in info["sites"]:
            table.add_row(s["site_id"], "?" if s["rows"] is None else str(s["rows"]))
        console.print(table)
        if info.get("source"):
            console.print(f"source: {escape(info['source'])}")


@app.command()
def recommend(
    run: Annotated[Path, typer.Argument(help="run folder of a `fedcare simulate --treatment` run")],
    data: Annotated[Path, Opt(help="CSV/Parquet file of patients (the training table's feature columns)")],
    out: Annotated[Optional[Path], Opt(help="CSV to write (default <run>/recommendations.csv)")] = None,
) -> None:
    """Per patient: each arm's predicted outcome, each arm's effect against the control with a 95 %
    interval, and the recommended arm; the run's own preprocessing encodes the patients."""
    from fedcare.data.readers import read_table
    from fedcare.interfaces.api import recommend as recommend_rows

    table = recommend_rows(run, read_table(data))
    target = out or run / "recommendations.csv"
    table.to_csv(target, index=False)
    shown = table.head(20)
    console.print(shown.to_string(float_format=lambda v: f"{v:+.3f}"))
    counts = table["recommended"].value_counts().to_dict()
    console.print(f"{len(table)} patients · recommended: {', '.join(f'{a} {n}' for a, n in counts.items())} · "
                  f"written to {target}")


INSECURE_WARNING = ("warning: --insecure: plain HTTP; tokens, parameters and metrics travel unencrypted and the "
                    "coordinator is not authenticated. Use only on a closed test network.")


@app.command()
def coordinator(
    config: Annotated[Path, Opt("--config", help="the federation's YAML config (the same keys as simulate)")],
    credentials: Annotated[Path, Opt(help="the authority directory from `fedcare certs init`")] = Path("credentials"),
    state: Annotated[Path, Opt(help="folder for the coordinator's database, checkpoints and run folders")] = Path("coordinator"),
    database: Annotated[Optional[Path], Opt(help="the SQLite file (default <state>/coordinator.db)")] = None,
    host: Annotated[str, Opt(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, Opt(help="TCP port: the one port sites connect to")] = 8443,
    sites: Annotated[Optional[str], Opt(help="comma-separated site ids taking part, in order "
                                              "(default: every site with a credential, in the order issued)")] = None,
    deadline: Annotated[Optional[float], Opt(help="seconds a round waits for sites before closing on quorum "
                                                  "(min_sites); default: the config's deadline, 600")] = None,
    max_body_mb: Annotated[Optional[float], Opt(help="largest upload accepted, MB; default: the config's "
                                                     "max_body_mb, 512")] = None,
    start: Annotated[bool, Opt("--start/--no-start", help="start the run at once (else: fedcare admin start)")] = False,
    insecure: Annotated[bool, Opt("--insecure", help="plain HTTP without TLS (test networks only)")] = False,
    live: Annotated[bool, Opt("--live", help="keep the run open: each phase ends in a model version "
                                             "(<state>/models/v<N>/), new data starts the next (docs/deployment.md)")] = False,
    min_new_rows: Annotated[int, Opt(help="--live: a site has new data with at least this many new rows")] = 1,
    min_new_sites: Annotated[int, Opt(help="--live: a phase starts when this many sites have new data")] = 1,
    phase_every: Annotated[Optional[float], Opt(help="--live: also start a phase this many seconds after the "
                                                     "last version when any site has new rows")] = None,
    site_timeout: Annotated[float, Opt(help="--live: a site silent this many seconds is left out of the next "
                                            "phase")] = 3600.0,
    drift_threshold: Annotated[float, Opt(help="--live: a drop of the headline metric on a site's new rows beyond "
                                               "this raises a drift notice")] = 0.05,
) -> None:
    """Serve the coordinator: sites poll it for tasks over HTTPS; a run survives restarts (kill -9 included)."""
    from fedcare.interfaces.htmlreport import render
    from fedcare.transports.network.service import serve

    if insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    settings = None
    if live:
        from fedcare.transports.network.phases import LiveSettings

        settings = LiveSettings(min_new_rows, min_new_sites, phase_every, site_timeout, drift_threshold=drift_threshold)
    serve(config, credentials, state, host, port, sites.split(",") if sites else None, deadline, max_body_mb,
          start, insecure, database, render, settings)


@app.command("site")
def site_agent(
    coordinator: Annotated[str, Opt(help="the coordinator's URL, e.g. https://fl.example.org:8443")],
    credential: Annotated[Path, Opt(help="this site's credential file from `fedcare certs site NAME`")],
    data: Annotated[Optional[Path], Opt(help="this hospital's CSV/Parquet file (never leaves the site)")] = None,
    dataset: Annotated[Optional[str], Opt(help="instead of --data: this site's rows of a bundled dataset (demos)")] = None,
    site_id: Annotated[Optional[str], Opt(help="this site's id (checked against the credential)")] = None,
    state: Annotated[Optional[Path], Opt(help="the agent's own folder (default .fedcare-site/<site id>)")] = None,
    approve: Annotated[bool, Opt("--approve", help="show each run's plan and wait for a yes before training")] = False,
    insecure: Annotated[bool, Opt("--insecure", help="plain HTTP without TLS (test networks only)")] = False,
    keep_running: Annotated[bool, Opt("--keep-running", help="after a run, wait for the coordinator's next one "
                                                             "(for an agent run as a service)")] = False,
    policy: Annotated[Optional[Path], Opt(help="YAML file of the runs this site accepts without a person "
                                               "(models, algorithms, max_rounds, privacy)")] = None,
    images: Annotated[Optional[Path], Opt(help="instead of --data: this hospital's image manifest; with --data and "
                                               "--patient, its image input joined by patient")] = None,
    skip_bad_images: Annotated[bool, Opt("--skip-bad-images", help="skip and count unreadable images")] = False,
    watch_every: Annotated[Optional[float], Opt(help="live federation: look at the --data file every this many "
                                                     "seconds and tell the coordinator when it grew")] = None,
    max_backoff: Annotated[float, Opt(help="longest wait, seconds, between attempts to reach the coordinator")] = 30.0,
    omics: Annotated[Optional[Path], Opt(help="with --data and --patient: this hospital's gene-expression file, "
                                              "joined by patient (docs/multimodal.md)")] = None,
    patient: Annotated[Optional[str], Opt(help="the patient column joining --data, --omics and --images")] = None,
) -> None:
    """Run a site agent inside the hospital: outbound connections only; sends updates and metrics, never rows."""
    from fedcare.transports.network.service import run_site

    if insecure:
        print(INSECURE_WARNING, file=sys.stderr)
    joined = {k: p for k, p in (("omics", omics), ("image", images if data is not None else None)) if p is not None}
    if joined and (data is None or patient is None):
        raise ConfigError("--omics (or --images with --data) joins files by patient: give --data and --patient too")
    run_site(coordinator, credential, data, dataset, site_id, state, approve, insecure, keep_running, policy,
             None if joined else images, skip_bad_images, watch_every, max_backoff, joined, patient)


@app.command("demo-network")
def demo_network(
    sites: Annotated[int, Opt(help="hospitals taking part (1-4: the bundled heart-disease institutions)")] = 4,
    rounds: Annotated[int, Opt(help="rounds of the demo's run")] = 5,
    dir: Annotated[Path, Opt("--dir", help="an empty folder for the credentials, files, logs and the run")] = Path("fedcare-demo"),
) -> None:
    """A whole deployment on this machine: CA, credentials, federation.yaml, each hospital's own CSV, a
    coordinator and one agent per hospital over TLS on 127.0.0.1, run to completion."""
    import json

    from fedcare.interfaces.demo import run_demo
    from fedcare.interfaces.report import site_table

    run_dir = run_demo(dir, sites, rounds, say=lambda line: console.print(escape(line)))
    console.print(site_table(json.loads((run_dir / "summary.json").read_text())))
    console.print(f"run folder: {escape(str(run_dir))}")


@app.command("demo-multimodal")
def demo_multimodal(
    dir: Annotated[Path, Opt("--dir", help="a folder for the files, one subfolder per study")] = Path("fedcare-multimodal"),
) -> None:
    """The ovarian-genomics studies (real rows) as a multimodal layout: per study a clinical file (the
    outcome, debulking) and a gene file, joined by patient id; prints the command that runs them."""
    from fedcare.data.ovarianlayout import layout_command, write_ovarian_layout

    for folder in write_ovarian_layout(dir):
        console.print(f"wrote {escape(str(folder))}/clinical.csv and genes.csv")
    console.print(escape(layout_command(dir)))


admin_app = typer.Typer(no_args_is_help=True, help="Admin actions on a running coordinator (needs admin.json).")
app.add_typer(admin_app, name="admin")


@admin_app.command("start")
def admin_start(coordinator: Annotated[str, Opt(help="the coordinator's URL")],
                credential: Annotated[Path, Opt(help="admin.json from fedcare certs init")] = Path("credentials/admin.json"),
                config: Annotated[Optional[Path], Opt("--config", help="this run's YAML config (default: the "
                                                      "coordinator's); the previous run must be over")] = None,
                insecure: Annotated[bool, Opt("--insecure")] = False) -> None:
    """Start a run, without restarting the coordinator."""
    from fedcare.transports.network.service import start_run

    console.print(f"run {start_run(coordinator, credential, config, insecure)['run_id']} started")


@admin_app.command("stop")
def admin_stop(coordinator: Annotated[str, Opt(help="the coordinator's URL")],
               credential: Annotated[Path, Opt(help="admin.json from fedcare certs init")] = Path("credentials/admin.json"),
               insecure: Annotated[bool, Opt("--insecure")] = False) -> None:
    """Stop the run under way."""
    from fedcare.transports.network.service import admin_call

    console.print(admin_call(coordinator, credential, "POST", "/v1/run/stop", insecure))


@admin_app.command("status")
def admin_status(coordinator: Annotated[str, Opt(help="the coordinator's URL")],
                 credential: Annotated[Path, Opt(help="admin.json from fedcare certs init")] = Path("credentials/admin.json"),
                 as_json: Annotated[bool, Opt("--json", help="the coordinator's answer as JSON")] = False,
                 insecure: Annotated[bool, Opt("--insecure")] = False) -> None:
    """The run's status: running, paused (and why), completed, stopped or failed; whom it waits for; its rounds."""
    import json

    from fedcare.interfaces.status import status_view
    from fedcare.transports.network.service import admin_call

    status = admin_call(coordinator, credential, "GET", "/v1/status", insecure)
    if as_json:
        print(json.dumps(status, indent=2))
    else:
        console.print(status_view(status))


@admin_app.command("models")
def admin_models(coordinator: Annotated[str, Opt(help="the coordinator's URL")],
                 credential: Annotated[Path, Opt(help="admin.json from fedcare certs init")] = Path("credentials/admin.json"),
                 as_json: Annotated[bool, Opt("--json", help="the coordinator's answer as JSON")] = False,
                 insecure: Annotated[bool, Opt("--insecure")] = False) -> None:
    """A live federation's model versions: version, time, rounds, metric, sites."""
    import json
    from datetime import UTC, datetime

    from rich.table import Table

    from fedcare.transports.network.service import admin_call

    versions = admin_call(coordinator, credential, "GET", "/v1/models", insecure)
    if as_json:
        print(json.dumps(versions, indent=2))
        return
    table = Table("version", "published (UTC)", "rounds", "metric", "sites")
    for v in versions:
        when = datetime.fromtimestamp(v["published"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        value = "-" if v["value"] is None else f"{v['metric']} {v['value']:.3f}"
        table.add_row(f"v{v['version']}", when, str(v["rounds"]), value, escape(", ".join(v["sites"])))
    console.print(table)


@admin_app.command("remove-site")
def admin_remove_site(name: Annotated[str, typer.Argument(help="site id")],
                      coordinator: Annotated[str, Opt(help="the coordinator's URL")],
                      credential: Annotated[Path, Opt(help="admin.json from fedcare certs init")] = Path("credentials/admin.json"),
                      insecure: Annotated[bool, Opt("--insecure")] = False) -> None:
    """A live federation: the site leaves; no later phase or quorum counts it (audited)."""
    from fedcare.transports.network.service import admin_call

    admin_call(coordinator, credential, "POST", f"/v1/live/sites/{name}/remove", insecure)
    console.print(f"site '{escape(name)}' removed from the live federation")


certs_app = typer.Typer(no_args_is_help=True,
                        help="Credentials for a networked deployment: private CA, coordinator TLS certificate, "
                             "site and admin tokens. Tokens are written to files, never printed.")
app.add_typer(certs_app, name="certs")
CertsDir = Annotated[Path, Opt("--dir", help="the authority's directory (keep it on the coordinator's host)")]


@certs_app.command("init")
def certs_init(
    dir: CertsDir = Path("credentials"),
    host: Annotated[Optional[list[str]], Opt("--host", help="coordinator DNS name or IP address; repeatable "
                                                            "(default: localhost and 127.0.0.1)")] = None,
    days: Annotated[int, Opt(help="validity of the CA and the coordinator certificate")] = 365,
) -> None:
    """Create the private CA, the coordinator's TLS certificate and the admin credential."""
    from fedcare.transports.network.credentials import init_authority

    auth = init_authority(dir, hosts=host or ("localhost", "127.0.0.1"), days=days)
    console.print(f"authority created in {escape(str(auth.directory))}: the sites pin {escape(auth.ca_cert.name)}")
    console.print(f"admin credential: {escape(str(auth.admin_credential))} (secret: it starts and stops runs)")


@certs_app.command("site")
def certs_site(name: Annotated[str, typer.Argument(help="site id")], dir: CertsDir = Path("credentials")) -> None:
    """Issue a site's credential file (or replace its token: the old one stops working)."""
    from fedcare.transports.network.credentials import check_site_id, issue_site, list_sites

    check_site_id(name)  # first, so a bad id is the error reported even without a registry
    before = {r.site_id: r for r in list_sites(dir)}
    path = issue_site(dir, name)
    if name in before:
        state = "revoked" if before[name].revoked else "active"
        console.print(f"replaced the token of site '{escape(name)}' (was {state}): the old token no longer works")
    console.print(f"credential for site '{escape(name)}': {escape(str(path))}; send it to the site over a "
                  "secure channel; it holds a secret token")


@certs_app.command("revoke")
def certs_revoke(name: Annotated[str, typer.Argument(help="site id")], dir: CertsDir = Path("credentials")) -> None:
    """Revoke a site's token; a running coordinator refuses it from its next request on."""
    from fedcare.transports.network.credentials import revoke_site

    revoke_site(dir, name)
    console.print(f"site '{escape(name)}' is revoked (`fedcare certs site {escape(name)}` issues a new token)")


@certs_app.command("list")
def certs_list(dir: CertsDir = Path("credentials")) -> None:
    """List the sites with when they were issued and revoked (never their tokens)."""
    from rich.table import Table

    from fedcare.transports.network.credentials import list_sites

    table = Table()
    for column in ("site", "issued", "revoked"):
        table.add_column(column)
    for r in list_sites(dir):
        table.add_row(escape(r.site_id), r.issued, r.revoked or "-")
    console.print(table)


audit_app = typer.Typer(no_args_is_help=True,
                        help="Audit a finished run: what an attacker can learn about the patients it trained on.")
app.add_typer(audit_app, name="audit")


@audit_app.command("membership")
def audit_membership(
    run_dir: Annotated[Path, typer.Argument(help="the folder of a fedcare simulate run (its --out)")],
    shadows: Annotated[int, Opt(help="shadow federations the attacker trains")] = 4,
    seed: Annotated[int, Opt(help="seed of the held-out split and the shadows")] = 0,
    model: Annotated[str, Opt(help="global | personalized | all")] = "all",
) -> None:
    """Membership inference (loss threshold, shadow models): AUC 0.5 means the attacker guesses."""
    from rich.table import Table

    from fedcare.interfaces.audit import AUDIT_FILE, audit_membership as run_audit

    with console.status(f"attacking the run's models ({shadows} shadow federations)"):
        result = run_audit(run_dir, shadows=shadows, seed=seed, model=model)
    table = Table(title=f"membership inference · {result['dataset']} · {result['algorithm']}")
    for column in ("attack", "model", "AUC", "adv.", "worst site (AUC)", "in / out"):
        table.add_column(column, justify="right" if column in ("AUC", "adv.", "in / out") else "left")
    for attack, by_model in result["attacks"].items():
        for name, r in by_model.items():
            worst = r["worst_site"]
            shown = "—" if worst["site_id"] is None else f"{escape(worst['site_id'])} {worst['auc']:.3f}"
            table.add_row("loss" if attack == "loss_threshold" else attack, name, _fmt3(r["auc"]),
                          _fmt3(r["advantage"]), shown, f"{r['members']}/{r['non_members']}")
    console.print(table)
    console.print("loss: loss threshold · shadow: shadow models · adv.: best TPR − FPR")
    console.print("in / out: members / non-members scored · AUC 0.5: the attacker guesses")
    dp = result["dp"]
    console.print("no record-level DP (ε = ∞)" if dp is None else
                  f"record-level DP: ε = {dp['epsilon']:.3f} spent (budget {dp['budget']}, δ = {dp['delta']:g})")
    console.print("an attack's AUC is a lower bound on leakage, not a guarantee")
    console.print(f"written: {escape(str(run_dir / AUDIT_FILE))}")


def _fmt3(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


# ----- using a run's model: predict, export (interfaces/modelcli.py) -----
from fedcare.interfaces import modelcli  # noqa: E402

modelcli.register(app, console)


def main() -> None:
    try:
        command = typer.main.get_command(app)
        with_config_defaults(command.commands["simulate"])  # type: ignore[attr-defined]
        command()
    except FedcareError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, never wrapped
        sys.exit(2)
    except OSError as exc:  # a disk fault (read-only folder, full disk): one line; written files stay whole
        where = f"'{exc.filename}'" if exc.filename else "a file"
        print(f"error: cannot use {where} ({exc.strerror or exc}); restore access or free disk space and run "
              "again (a simulation with checkpoints continues with --resume RUN_FOLDER)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
