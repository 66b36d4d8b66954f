"""`shepherd eval`: replay shepherding and every baseline on test traces and write a report.

    shepherd eval --train runs/gsm8k_train.sqlite --test runs/gsm8k_train.sqlite --out runs/eval_gsm8k
        (one store: its items are split into train / test halves, seeded)
    shepherd eval --train runs/gsm8k_train.sqlite --test runs/code_test.sqlite --tasks humaneval,mbpp
        (the paper's zero-shot setting: trained on GSM8K, evaluated on HumanEval and MBPP)
    shepherd eval --rerun runs/eval_gsm8k/manifest.json --out runs/eval_gsm8k_again
        (the same run again: same config, exactly the same items; fingerprints compared)
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def _price(text: str, what: str):
    from ..costs import Price

    try:
        a, b = (float(x) for x in text.split(","))
        return Price(input=a, output=b)
    except Exception:  # noqa: BLE001
        raise typer.BadParameter(f"{what}: give 'INPUT,OUTPUT' USD per 1M tokens, e.g. 0.59,0.79") from None


def _csv(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def eval_cmd(
    test: Path | None = typer.Option(None, "--test", help="Trace store (SQLite) with the test sweeps."),
    train: Path | None = typer.Option(None, "--train", help="Trace store to train the learned baselines and the "
                                         "shepherding predictor on. The same file as --test: its items are split."),
    tasks: str | None = typer.Option(None, "--tasks", help="Comma-separated test tasks (default: all in --test)."),
    train_tasks: str | None = typer.Option(None, "--train-tasks",
                                              help="Tasks of --train to train on (default: all)."),
    out: Path = typer.Option(Path("runs/eval"), "--out", "-o", help="Directory for report.md, manifest.json, "
                                                                     "results.json and figures/."),
    featurizer: str = typer.Option("auto", "--featurizer", "-f",
                                   help="Query features of the learned baselines and predictor: auto (minilm if "
                                        "installed, else lexical) | lexical | minilm | a+b."),
    predictor: Path | None = typer.Option(None, "--predictor", help="Use this predictor artifact instead of "
                                             "training one on --train."),
    baselines: Path | None = typer.Option(None, "--baselines", help="Load learned baselines from DIR/<kind>/ "
                                             "(an earlier run's artifacts/) instead of training them."),
    llm_price: str = typer.Option("0.59,0.79", "--llm-price", help="LLM USD per 1M input,output tokens (paper: Groq "
                                                                   "Llama-3.3-70B)."),
    slm_price: str = typer.Option("0.05,0.08", "--slm-price", help="SLM price of the priced scenario (the other "
                                                                   "scenario counts the SLM free, as the paper)."),
    policies: str | None = typer.Option(None, "--policies", help="Comma-separated subset of policies."),
    test_fraction: float = typer.Option(0.5, "--test-fraction", min=0.05, max=0.95,
                                        help="Share of items held out for testing when --train is --test."),
    split_seed: int = typer.Option(0, "--split-seed"),
    max_points: int = typer.Option(21, "--max-points", min=3, help="Knob values per learned policy curve."),
    bootstrap: int = typer.Option(2000, "--bootstrap", min=100, help="Bootstrap resamples for the intervals."),
    seed: int = typer.Option(0, "--seed"),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most N test items per task."),
    data: Path | None = typer.Option(None, "--data", help="Benchmark data folder (default: $SHEPHERD_DATA_DIR)."),
    rerun: Path | None = typer.Option(None, "--rerun", help="Repeat the run a manifest.json describes (same "
                                         "config, exactly its items) and check its fingerprints; the other options "
                                         "but --out are ignored."),
) -> None:
    """Replay shepherding, the baselines and the oracles on test traces; write a report a reader can open
    without running anything (report.md + manifest.json + results.json + figures/)."""
    from rich.console import Console

    from ..console import fail
    from .suite import ALL_POLICIES, OPTIONAL_POLICIES, EvalConfig

    console = Console(stderr=True)
    argv = ["shepherd", "eval", *sys.argv[2:]] if len(sys.argv) > 1 and sys.argv[1] == "eval" else None
    if rerun is not None:
        import json

        try:
            manifest = json.loads(rerun.read_text(encoding="utf-8"))
            cfg = EvalConfig.from_manifest(manifest, str(out), argv or ["shepherd", "eval", "--rerun", str(rerun),
                                                                        "--out", str(out)], source=str(rerun))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"--rerun: {rerun} is not a readable eval manifest: {exc}")
            return
        _run(cfg, console)
        return
    if test is None:
        fail("give --test STORE (or --rerun manifest.json)")
        return
    for p, what in ((test, "--test"), (train, "--train")):
        if p is not None and not p.is_file():
            fail(f"{what}: trace store not found: {p}")
    wanted = _csv(policies)
    if wanted:
        unknown = [w for w in wanted if w not in ALL_POLICIES + OPTIONAL_POLICIES]
        if unknown:
            fail(f"unknown policies {unknown}; known: {', '.join(ALL_POLICIES + OPTIONAL_POLICIES)}")
        for must in ("slm-only", "llm-only"):
            if must not in wanted:
                wanted.append(must)
    cfg = EvalConfig(
        test=str(test), out=str(out), train=str(train) if train else None, tasks=_csv(tasks),
        train_tasks=_csv(train_tasks), featurizer=featurizer, predictor=str(predictor) if predictor else None,
        baselines=str(baselines) if baselines else None,
        llm_price=_price(llm_price, "--llm-price"), slm_price=_price(slm_price, "--slm-price"),
        test_fraction=test_fraction, split_seed=split_seed, max_points=max_points, n_boot=bootstrap, seed=seed,
        policies=wanted, limit=limit, data=str(data) if data else None,
        argv=argv or ["shepherd", "eval", "--test", str(test), *(["--train", str(train)] if train else []),
                      "--out", str(out)],
    )
    _run(cfg, console)


def _run(cfg, console) -> None:
    from ..console import fail
    from ..traces.store import StoreError
    from .report import write_report
    from .suite import run_eval

    try:
        run = run_eval(cfg, log=lambda m: console.print(f"[dim]{m}[/]", highlight=False))
        path = write_report(run)
    except (StoreError, LookupError, ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
        return
    for r in run.results:
        llm = r.references.get("slm-free", {}).get("llm", {})
        console.print(f"{r.task}: {len(r.item_ids)} items, LLM-only accuracy {llm.get('accuracy', float('nan')):.3f}",
                      highlight=False)
    if "rerun_check" in run.manifest:
        console.print(f"rerun check: {run.manifest['rerun_check']['summary']}", highlight=False)
    typer.echo(str(path))


def study_cmd(
    spec: Path = typer.Argument(Path("traces/study.toml"), help="Study spec (TOML) naming the packed traces."),
    out: Path = typer.Option(Path("docs"), "--out", "-o", help="Writes OUT/results.md and OUT/results/."),
    work: Path = typer.Option(Path("runs/study"), "--work", help="Folder for the unpacked trace stores."),
    data: Path | None = typer.Option(None, "--data", help="Benchmark data folder (default: $SHEPHERD_DATA_DIR "
                                        "or the files shipped with the package)."),
) -> None:
    """Recompute the whole study from packed traces, without calling a model: unpack them, train the
    predictor and the learned baselines on the training traces, replay every policy on every benchmark,
    and write results.md, per-benchmark reports and figures."""
    from rich.console import Console

    from ..console import fail
    from ..predictor.features import EmbeddingUnavailable
    from ..traces.compact import CompactTraceError
    from ..traces.store import StoreError
    from .study import StudyError, load_spec, run_study

    console = Console(stderr=True)
    try:
        s = load_spec(spec)
        run = run_study(s, spec.parent, out, work, data=str(data) if data else None,
                        log=lambda m: console.print(f"[dim]{m}[/]", highlight=False))
    except (StudyError, CompactTraceError, StoreError, LookupError, ValueError, FileNotFoundError,
            EmbeddingUnavailable) as exc:  # a spec naming `minilm` features without the embeddings extra
        fail(str(exc))
        return
    for name, b in run.summary["benchmarks"].items():
        console.print(f"{name}: {b.get('items', 0)} items", highlight=False)
    typer.echo(str(out / "results.md"))


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command("study")(study_cmd)
