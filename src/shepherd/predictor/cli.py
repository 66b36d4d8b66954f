"""`shepherd train` and `shepherd calibrate`: the predictor from a trace store's sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _fail(message: str, code: int = 2) -> None:
    from ..console import fail

    fail(message, code)


def _print_metrics(console, title: str, m: dict) -> None:
    keys = ["n", "positives", "auc", "balanced_accuracy@0.5", "size_mae_fraction", "size_mae_fraction_constant",
            "size_mae_tokens", "size_under_rate", "length_mape"]
    parts = [f"{k}={m[k]}" for k in keys if k in m]
    console.print(f"  {title}: " + "  ".join(parts), highlight=False)


def train_cmd(
    store: Path = typer.Option(..., "--store", help="Trace store (SQLite) holding the task's sweep."),
    task: str = typer.Option(..., "--task", help="Task whose sweep to train on (e.g. gsm8k)."),
    out: Path = typer.Option(..., "--out", help="Directory to write the predictor artifact to."),
    featurizer: str = typer.Option("lexical", "--featurizer", "-f",
                                   help="lexical | minilm | slm-embedding | a+b (concatenation)."),
    sweep: str | None = typer.Option(None, "--sweep", help="Sweep id, when the store has several for the task."),
    split: str | None = typer.Option(None, "--split", help="Only items of this dataset split."),
    val_fraction: float = typer.Option(0.25, "--val-fraction", min=0.05, max=0.9),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/validation split and the model's init."),
    lam: float = typer.Option(0.5, "--lambda", min=0.0, max=1.0, help="Joint loss weight of the classifier."),
    hidden: int = typer.Option(16, "--hidden", min=0, help="Trunk width (0: linear heads)."),
    epochs: int = typer.Option(300, "--epochs", min=1),
    l2: float = typer.Option(0.1, "--l2", min=0.0),
    standardize: bool | None = typer.Option(None, "--standardize/--no-standardize",
                                               help="z-score every input column / none (default: the columns "
                                                    "the featurizer asks for: embeddings yes, lexical no)."),
    size_target: str = typer.Option("fraction", "--size-target", help="fraction | log_tokens"),
    no_filter: bool = typer.Option(False, "--no-filter",
                                   help="Keep items no swept hint fixes (label llm, size 1.0)."),
    no_reactive: bool = typer.Option(False, "--no-reactive", help="Skip the reactive (sample-feature) model."),
    cv: int = typer.Option(0, "--cv", min=0, help="Also report k-fold out-of-fold metrics (k >= 2)."),
    select_from: str | None = typer.Option(
        None, "--select", metavar="F[:H[:L2[:SIZE]]],...",
        help="Choose featurizer, trunk width, L2 (and size target) among these recipes out of fold on the training "
             "items (by AUC, or cost with --select-by; e.g. 'lexical:16:0.1,minilm:0:1:log_tokens'); overrides "
             "-f/--hidden/--l2 (and --size-target where a recipe names one)."),
    select_repeats: int = typer.Option(3, "--select-repeats", min=1,
                                       help="Fold assignments per recipe (and per learning-curve point)."),
    select_by: str = typer.Option("auc", "--select-by",
                                  help="auc: the mean out-of-fold AUC; cost: the out-of-fold cost share at "
                                       "--select-target of LLM-only accuracy (both are reported)."),
    select_target: float = typer.Option(0.9, "--select-target", min=0.01, max=1.0,
                                        help="Accuracy target (share of LLM-only) of the cost score."),
    curve_shares: str | None = typer.Option(
        None, "--learning-curve", metavar="S,...",
        help="Also report out-of-fold AUC with each fold's model fitted on these shares of its training items "
             "(e.g. '0.25,0.5,1'): does more data help?"),
    data_dir: Path | None = typer.Option(None, "--data", help="Benchmark data folder, for code tasks' items "
                                         "(default: $SHEPHERD_DATA_DIR or the task's source)."),
    as_json: bool = typer.Option(False, "--json", help="Print the training report as JSON."),
) -> None:
    """Train the hint predictor on a sweep's traces and save it as an artifact directory."""
    from rich.console import Console

    from .data import load_store
    from .model import NetConfig
    from .pipeline import Selecting, fit_predictor
    from .train import TrainSettings

    console = Console(stderr=True)
    try:
        data = load_store(store, task, filter=not no_filter, sweep=sweep, split=split, data=data_dir)
        for note in data.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        settings = TrainSettings(featurizer=featurizer, model=NetConfig(hidden=hidden, lam=lam, epochs=epochs,
                                                                           l2=l2, size_target=size_target, seed=seed,
                                                                           standardize=standardize),
                                 val_fraction=val_fraction, seed=seed, reactive=not no_reactive, cv=cv)
        folds = cv if cv >= 2 else 5
        selecting = None
        if select_from:
            from .select import parse_candidates

            selecting = Selecting(parse_candidates(select_from), k=folds, repeats=select_repeats, by=select_by,
                                  target=select_target)
        shares = None
        if curve_shares:
            try:
                shares = [float(x) for x in curve_shares.split(",") if x.strip()]
            except ValueError:
                raise ValueError(f"--learning-curve: expected comma-separated shares, got {curve_shares!r}") from None
        fitted = fit_predictor(data.examples, settings, grid=data.grid, sweep_settings=data.sweep_settings,
                               source={"store": str(store), "task": task, "sweep": data.sweep_settings.get("sweep"),
                                       "filter": not no_filter, "swept_items": data.n_swept,
                                       "label_counts_all": data.label_counts},
                               selecting=selecting, curve_shares=shares, curve_folds=folds,
                               curve_repeats=select_repeats)
        predictor, report, selection, curve = fitted.predictor, fitted.report, fitted.selection, fitted.curve
        featurizer = fitted.settings.featurizer
        predictor.save(out)
    except (FileNotFoundError, LookupError, ValueError, ImportError) as exc:
        _fail(str(exc))
        return
    report["label_counts_all"] = data.label_counts
    report["artifact"] = str(out)
    if selection is not None:
        report["selection"] = selection.to_dict()
    if curve is not None:
        report["learning_curve"] = [p.to_dict() for p in curve]
    if as_json:
        if "cv" in report:
            report["cv"].pop("oof", None)
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    console.print(f"deployed model fitted on all {report['fitted_on_items']} items; validation: a fit on "
                  f"{report['train_items']} scored on {report['val_items']} "
                  f"({report['positives']} need a hint; swept {data.n_swept}: {data.label_counts}) "
                  f"with {featurizer} features", highlight=False)
    if selection is not None:
        for c in report["selection"]["candidates"]:
            mark = "[bold]chosen[/] " if c["label"] == report["selection"]["chosen"] else ""
            cost = ", ".join(f"{m} {'not reached' if v is None else f'{v:.3f}'}" for m, v in c["cost"].items())
            console.print(f"  recipe {c['label']}: out-of-fold AUC " + ", ".join(
                f"{m} {v:.3f}" for m, v in c["auc"].items()) + (f"; cost share {cost}" if cost else "")
                + f"  {mark}", highlight=False)
        alt = report["selection"].get("alternative")
        if alt and alt != report["selection"]["chosen"]:
            other = "AUC" if report["selection"]["by"] == "cost" else "cost"
            console.print(f"  (chosen by out-of-fold {other} instead: {alt})", highlight=False)
    for p in report.get("learning_curve", []):
        console.print(f"  learning curve: share {p['fraction']:g} ({p['train_items']:.0f} items a model): out-of-fold "
                      "AUC " + ", ".join(f"{m} {v:.3f}" for m, v in p["auc"].items()), highlight=False)
    for mode in report["modes"]:
        console.print(f"[bold]{mode}[/]", highlight=False)
        _print_metrics(console, "train", report["train"][mode])
        if mode in report["validation"]:
            _print_metrics(console, "validation", report["validation"][mode])
        if "cv" in report and mode in report["cv"]:
            _print_metrics(console, f"{report['cv']['folds']}-fold cv", report["cv"][mode])
    typer.echo(str(out))


def calibrate_cmd(
    artifact: Path = typer.Option(..., "--artifact", "-a", help="Predictor directory from `shepherd train`."),
    store: Path | None = typer.Option(None, "--store", help="Trace store (default: the one it was trained on)."),
    task: str | None = typer.Option(None, "--task", help="Task (default: the one it was trained on)."),
    accuracy: float | None = typer.Option(None, "--accuracy", min=0.0,
                                             help="Target: this fraction of the LLM-only accuracy (e.g. 0.9, 1.0)."),
    budget: float | None = typer.Option(None, "--budget", min=0.0, help="Target: mean cost per query, USD."),
    budget_ratio: float | None = typer.Option(None, "--budget-ratio", min=0.0,
                                                 help="Target: this fraction of the LLM-only cost."),
    policy: str = typer.Option("both", "--policy", help="proactive | reactive | both"),
    held_out: str = typer.Option("oof", "--held-out",
                                 help="oof: every item, scored out of fold by refits of the artifact's recipe; "
                                      "all: every item with the artifact's model (only for a store it was not "
                                      "trained on: the deployed model is fitted on every training item)."),
    folds: int = typer.Option(5, "--folds", min=2, help="Folds for --held-out oof."),
    scales: str = typer.Option("0.75,1,1.25,1.5,2,3", "--scales",
                               help="Hint-size scales to search, comma-separated."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config (for the models' prices)."),
    data_dir: Path | None = typer.Option(None, "--data", help="Benchmark data folder, for code tasks' items "
                                         "(default: $SHEPHERD_DATA_DIR or the task's source)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report the choice without saving it."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Pick the decision threshold (and scale) that meets a target on held-out traces; store it."""
    from rich.console import Console

    from ..config import ConfigError, load_config
    from .calibrate import apply_choice, calibrate, oof_raw
    from .data import load_store
    from .predictor import ArtifactError, Predictor

    console = Console(stderr=True)
    targets = [(n, v) for n, v in (("accuracy", accuracy), ("budget", budget), ("budget_ratio", budget_ratio))
               if v is not None]
    if len(targets) != 1:
        _fail("give exactly one target: --accuracy, --budget or --budget-ratio")
    target, value = targets[0]
    try:
        cfg = load_config(config)
        pred = Predictor.load(artifact)
        training = pred.manifest.get("training", {})
        store_path = store or training.get("store")
        task_name = task or training.get("task")
        if not store_path or not task_name:
            _fail("the artifact does not name its store/task: pass --store and --task")
        data = load_store(store_path, task_name, filter=bool(training.get("filter", True)),
                          sweep=training.get("sweep"), data=data_dir)
        for note in data.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        raws = {}
        if held_out == "val":
            _fail("--held-out val is gone: the deployed model is fitted on every training item, so none is held "
                  "out from it; use --held-out oof (refits that never saw the item score it)")
        if held_out not in ("all", "oof"):
            _fail("--held-out must be oof or all")
        examples = list(data.examples)
        if held_out == "oof":
            raws = oof_raw(pred, examples, k=folds)
        modes = ["proactive", "reactive"] if policy == "both" else [policy]
        modes = [m for m in modes if m == "proactive" or pred.has(m)]
        scale_list = [float(s) for s in scales.split(",") if s.strip()]
        results = {}
        for mode in modes:
            choice, _curve = calibrate(pred, mode, examples, target, value, scales=scale_list, raw=raws.get(mode),
                                       llm_price=cfg.llm.price, slm_price=cfg.slm.price)
            results[mode] = choice.to_dict()
            if not dry_run:
                apply_choice(pred, mode, choice, {"store": str(store_path), "task": task_name, "held_out": held_out,
                                                  **({"folds": folds} if held_out == "oof" else {}),
                                                  "scales": scale_list})
        if not dry_run:
            pred.save(artifact)
    except (ArtifactError, ConfigError, FileNotFoundError, LookupError, ValueError) as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    for mode, r in results.items():
        flag = "" if r["feasible"] else "  [yellow](target not reachable: most accurate setting)[/]"
        console.print(
            f"[bold]{mode}[/]: threshold {r['threshold']:.4f} scale {r['scale']:g} -> accuracy {r['accuracy']:.3f} "
            f"({r['relative_accuracy'] or 0:.2%} of LLM-only {r['llm_accuracy']:.3f}), cost ${r['cost']:.8f}/query "
            f"({r['relative_cost'] or 0:.2%} of LLM-only) on {r['n_items']} held-out items{flag}", highlight=False)
    if not dry_run:
        typer.echo(str(artifact))


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("calibrate")(calibrate_cmd)
