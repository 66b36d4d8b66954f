"""`shepherd sweep ...`: run sweeps into a trace store, and read labels, exports and oracles out of it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

from ..console import console, fail, out

sweep_app = typer.Typer(help="Sweeps: LLM answers, SLM continuations of hints cut from them, samples; "
                             "labels, replay and exports from the trace store.", no_args_is_help=True)
DEFAULT_STORE = Path("runs/traces.sqlite")


def load_task(name: str, data: Path | None = None):
    """The task by name, through the task registry (its data: `data`, else the default source)."""
    from ..tasks import get_task

    return get_task(name, data) if data is not None else get_task(name)


def _floats(text: str) -> tuple[float, ...]:
    """Comma-separated numbers, which may be negative (thresholds); empty: none."""
    try:
        return tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def parse_grid(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise typer.BadParameter(f"grid must be comma-separated fractions, got {text!r}") from None
    if not vals:
        raise typer.BadParameter("empty grid")
    return vals


class _Progress:
    """A rich progress bar on a terminal; one plain line per item otherwise (nohup logs)."""

    def __init__(self, total: int, label: str):
        self.total, self.done, self.t0, self.label = total, 0, time.perf_counter(), label
        self.seconds: list[float] = []
        self.live = console.is_terminal
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                TextColumn("left"), TimeRemainingColumn(), console=console)
            self.task = self.bar.add_task(label, total=total, rate="")

    def __enter__(self):
        if self.live:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.bar.stop()

    def advance(self, res) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.t0
        if not res.skipped:
            self.seconds.append(res.seconds)
        # wall time per item worked (items overlap when several run at once)
        per = elapsed / len(self.seconds) if self.seconds else 0.0
        left = per * (self.total - self.done)
        status = (f"skipped (another sweep process has it: {res.claimed_by})" if res.claimed_by else
                  "skipped (done before)" if res.skipped else f"error: {res.error}" if res.error else
                  f"{res.seconds:.1f}s, {res.calls} calls, {res.hits} cached, first pass "
                  f"{'-' if res.first_pass is None else res.first_pass}, llm {'ok' if res.llm_correct else 'wrong'}")
        if self.live:
            self.bar.update(self.task, advance=1, rate=f"{per:.1f} s/item" if per else "")
            if res.error:
                self.bar.console.print(f"[red]{res.item_id}: {res.error}[/]", highlight=False)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {self.done}/{self.total} {res.item_id}: {status} | "
                  f"elapsed {elapsed:.0f}s, {per:.1f} s/item, ~{left:.0f}s left", file=sys.stderr, flush=True)


@sweep_app.command("run")
def run_cmd(
    task_name: str | None = typer.Argument(None, metavar="[TASK]",
                                           help="Task name (gsm8k, cnk12, humaneval, mbpp; humaneval-completion: the "
                                           "assistant turn starts with the stub, the model writes the body); none "
                                           "with --from-record."),
    split: str | None = typer.Option(None, help="Split (default: the task's)."),
    limit: int | None = typer.Option(None, min=1, help="Number of items (the first ones, or a seeded sample)."),
    seed: int | None = typer.Option(None, help="Sample `limit` items with this seed (default: the first)."),
    ids: str | None = typer.Option(None, help="Comma-separated item ids, or @file with one id a line."),
    data: Path | None = typer.Option(None, help="Task data file or folder."),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s", help="SQLite trace store."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config (models, run settings)."),
    slm: str | None = typer.Option(None, help="SLM model name or .gguf path (overrides the config)."),
    llm: str | None = typer.Option(None, help="LLM model name or .gguf path (overrides the config)."),
    grid: str = typer.Option("0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", help="Hint fractions (0 is always added)."),
    trials: int = typer.Option(1, min=1, help="SLM continuations per level (trial 0 greedy)."),
    samples: int = typer.Option(3, min=0, help="Sampled SLM answers per item."),
    token_grid: str = typer.Option("", help="Hint levels at fixed token counts beside the fractions (for example "
                                   "8,16,32,64: short hints, finer than 10% of a long answer)."),
    samples_at: str = typer.Option("", help="Hint levels at which the SLM's continuation is sampled too, "
                                   "--samples times (for example 0.1,0.3: replays of agreement after a hint)."),
    rescue_thresholds: str = typer.Option("", help="Record rescues for the `rescue` policy's replay: the "
                                          "thresholds whose first doubt in the SLM's answer is a cut point "
                                          "(for example -0.5,-1,-1.5,-2)."),
    rescue_tokens: str = typer.Option("", help="... and the LLM's rescue lengths n (for example 8,16,32): one "
                                      "LLM call per cut, at the largest n."),
    rescue_window: int = typer.Option(8, min=1, help="... and the watch's window (tokens)."),
    temperature: float = typer.Option(0.7, min=0.0, help="Temperature of sampled trials and samples."),
    max_tokens: int | None = typer.Option(None, min=1, help="Answer budget (default: config, else task)."),
    sample_seed: int = typer.Option(0, help="Decoding seed: sampled calls use seed, seed+1, ..."),
    early_stop: bool = typer.Option(False, help="Stop each item at its first passing level, and after level 0 when the LLM is wrong (training sweeps: the label filter drops those items)."),
    concurrency: int | None = typer.Option(None, min=1, help="Items at a time (default: 1 with the sequential "
                                           "engine, 4 with the batched one)."),
    engine: str = typer.Option("auto", help="Local GGUF models: 'batched' decodes a sweep's concurrent calls "
                               "together (about 2x the items per hour on a CPU), 'sequential' one call at a "
                               "time; 'auto' (default) is batched unless --no-prefix-reuse."),
    slots: int | None = typer.Option(None, min=1, max=64, help="Sequences the batched engine decodes together "
                                     "(default: the config's, 8)."),
    prefix_reuse: bool = typer.Option(True, help="Let llama.cpp reuse the KV cache of the shared prompt "
                                      "prefix (off: every prompt from scratch, bit-reproducible)."),
    executor_name: str = typer.Option("local", "--executor", help="'local' (this machine) or 'ray' (workers of a "
                                      "Ray cluster hold the models; this machine keeps the store)."),
    address: str | None = typer.Option(None, help="Ray cluster address (HOST:PORT, or 'auto'); default: start a "
                                       "local cluster."),
    workers: int = typer.Option(2, min=1, help="Ray workers (each holds both models)."),
    worker_cpus: float = typer.Option(1.0, min=0.0, help="CPUs one Ray worker reserves."),
    from_record: Path | None = typer.Option(None, "--from-record", help="Sweep the queries a server recorded in "
                                            "this store ([server.record]) instead of a benchmark: labels from "
                                            "feedback, else the proxy (agreement with the LLM's answer); the "
                                            "generations paid for while serving are reused."),
    since: float | None = typer.Option(None, "--since", help="With --from-record: only queries served at or "
                                       "after this time (unix seconds)."),
) -> None:
    """Sweep TASK: the LLM's answer, hinted SLM continuations on a grid, SLM samples; all graded and
    stored. Interrupt it at any time and run it again: it resumes without repeating a stored call."""
    from ..config import ConfigError, load_config
    from ..models.base import BackendError
    from ..models.factory import build_backend
    from ..models.sources import ModelCorrupt, ModelNotFound
    from .executor import LocalExecutor, engine_name
    from .store import TraceStore
    from .sweep import SweepConfig, SweepPlan, make_units, register_sweep

    record_task = None
    try:
        if from_record is not None:
            from .from_record import RecordTask

            if task_name is not None:
                raise ValueError(f"give a TASK or --from-record, not both (got {task_name!r})")
            if executor_name != "local":
                raise ValueError("--from-record sweeps run with --executor local (the items live in the record)")
            task = record_task = RecordTask(from_record, since=since)
        elif task_name is None:
            raise ValueError("name a TASK (gsm8k, cnk12, humaneval, humaneval-completion, mbpp), or sweep recorded traffic with "
                             "--from-record STORE")
        else:
            task = load_task(task_name, data)
        split = split or task.default_split
        id_list = _id_list(ids)
        items = task.load(split, limit=limit, seed=seed, ids=id_list)
        cfg = load_config(config)
        if slm:
            cfg.slm.model, cfg.slm.model_id = slm, None
        if llm:
            cfg.llm.model, cfg.llm.model_id = llm, None
        if engine not in ("auto", "batched", "sequential"):
            raise ValueError(f"--engine must be auto, batched or sequential, not {engine!r}")
        for m in (cfg.slm, cfg.llm):
            if m.backend == "llamacpp":
                if engine != "auto" or not prefix_reuse:
                    m.engine = "sequential" if engine == "sequential" or not prefix_reuse else "batched"
                elif "engine" not in m.model_fields_set:  # the config's own choice stands
                    m.engine = "batched"
                if slots:
                    m.slots = slots
        plan = SweepPlan(grid=parse_grid(grid), trials=trials, samples=samples, temperature=temperature,
                         early_stop=early_stop, samples_at=parse_grid(samples_at) if samples_at else (),
                         token_grid=parse_grid(token_grid) if token_grid else (),
                         rescue_thresholds=_floats(rescue_thresholds), rescue_tokens=_floats(rescue_tokens),
                         rescue_window=rescue_window)
        slm_b = build_backend(cfg.slm)
        llm_b = build_backend(cfg.llm)
        if not prefix_reuse:
            from .prefix import FreshContext

            slm_b, llm_b = FreshContext(slm_b), FreshContext(llm_b)
        budget = max_tokens or (cfg.run.max_tokens if config else None) or getattr(task, "max_tokens", 512)
        scfg = SweepConfig(task=task.name, slm=slm_b.model_id, llm=llm_b.model_id, max_tokens=budget,
                           seed=sample_seed, temperature=temperature)
        store = TraceStore(store_path)
        if record_task is not None:
            from .from_record import seed_store

            seeded = seed_store(from_record, store)
            record_task.bind(store, llm_b.model_id)
            console.print(f"{len(items)} recorded queries from {from_record}; {seeded.copied} served generations "
                          f"copied into {store_path} ({seeded.already} there already)", highlight=False)
    except (ConfigError, ModelNotFound, ModelCorrupt, BackendError, ValueError, KeyError,
            FileNotFoundError) as exc:
        fail(str(exc))
    engines = {"slm": engine_name(slm_b), "llm": engine_name(llm_b)}
    batched = "batched" in engines["slm"] or "batched" in engines["llm"]
    concurrency = concurrency or (4 if batched else 1)
    sweep_id = register_sweep(store, scfg, plan, split, settings={
        "engine": engines, "concurrency": concurrency,
        "executor": executor_name if executor_name != "ray" else f"ray({workers} workers)",
        **({"prompt_style": task.prompt_style} if getattr(task, "prompt_style", "chat") != "chat" else {}),
        **({"labels": "proxy", "record": str(from_record)} if record_task is not None else {})})
    if record_task is not None:
        from .from_record import record_units

        units = record_units(record_task, items, scfg, plan)
    else:
        units = make_units(task, items, scfg, plan, split)
    console.print(f"sweep {sweep_id}: {len(units)} items of {task.name}/{split}, grid {list(plan.grid)}, "
                  f"{plan.trials} trial(s), {plan.samples} sample(s) at T={plan.temperature}"
                  f"{f' (and at hints {list(plan.samples_at)})' if plan.samples_at else ''}"
                  f"{f', token levels {list(plan.token_grid)}' if plan.token_grid else ''}"
                  f"{f', rescues at {list(plan.rescue_thresholds)} x {list(plan.rescue_tokens)} tokens' if plan.rescue_tokens else ''}"
                  f"{', early stop' if plan.early_stop else ''}{'' if prefix_reuse else ', no prefix reuse'}; "
                  f"engine {engines['slm']} + {engines['llm']}, {concurrency} item(s) at a time -> "
                  f"{store_path}", highlight=False, soft_wrap=True)
    if executor_name == "ray":
        from .ray_executor import RayExecutor

        executor = RayExecutor(cfg.slm, cfg.llm, task_name, store_path, data=None if data is None else str(data),
                               address=address, workers=workers, per_worker=concurrency,
                               worker_resources={"num_cpus": worker_cpus}, prefix_reuse=prefix_reuse)
        console.print(f"ray: {workers} worker(s), {concurrency} item(s) at a time each"
                      f"{f', cluster {address}' if address else ', local cluster'}", highlight=False)
    elif executor_name == "local":
        executor = LocalExecutor(slm_b, llm_b, task, store, concurrency=concurrency)
    else:
        fail(f"--executor must be local or ray, not {executor_name!r}")
    errors = 0
    calls = 0
    elsewhere = 0
    t0 = time.perf_counter()
    try:
        with _Progress(len(units), f"sweep {task.name}") as bar:
            for res in executor.run(units):
                errors += bool(res.error)
                calls += res.calls
                elsewhere += res.claimed_by is not None
                bar.advance(res)
    finally:
        if executor_name == "ray":
            if executor.lost:
                console.print(f"ray: {len(executor.lost)} unit(s) handed out again after their worker died",
                              highlight=False)
            executor.shutdown()
    console.print(f"done in {time.perf_counter() - t0:.0f}s: {calls} model calls, {errors} failed items"
                  + (f", {elsewhere} left to another sweep process on this store" if elsewhere else "")
                  + f"; store: {store.counts()}", highlight=False)
    store.close()
    if errors:
        raise typer.Exit(1)


def _open(store_path: Path):
    from .store import StoreError, TraceStore

    if not store_path.is_file():
        fail(f"no trace store at {store_path}")
    try:
        return TraceStore(store_path)
    except StoreError as exc:
        fail(str(exc))


@sweep_app.command("score")
def score_cmd(
    task_name: str | None = typer.Argument(None, metavar="[TASK]", help="Task of the sweep (if the store has several)."),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s", help="SQLite trace store."),
    sweep: str | None = typer.Option(None, help="Sweep id (if the task has several)."),
    kinds: str = typer.Option("hint0,sample", help="Which SLM generations: hint0 (its answer without a hint), "
                              "hint (every hinted continuation), sample."),
    levels: str | None = typer.Option(None, help="With kind hint: only the continuations at these hint fractions "
                                      "(for example 0.1,0.3,0.5: the rungs a confidence ladder judges)."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N items."),
    ids: str | None = typer.Option(None, help="Only these items: comma-separated ids, or @file with one id a line."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config (the SLM's model settings)."),
    slm: str | None = typer.Option(None, help="SLM model name or .gguf path (default: the config's)."),
) -> None:
    """Add token log-probabilities to stored SLM generations by scoring their texts under the model that
    wrote them (teacher forcing); nothing is regenerated. Resumable."""
    from ..config import ConfigError
    from ..models.base import BackendError
    from ..models.sources import ModelCorrupt, ModelNotFound
    from .scoring import score_sweep

    store = _open(store_path)
    try:
        backend = _slm_backend(config, slm)
        if not hasattr(backend, "score"):
            fail(f"{backend.model_id}: this backend cannot score a given text (the in-process GGUF one can)")

        def progress(item: str, done: int, total: int, s) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {done}/{total} {item}: {s.scored} scored, {s.skipped} had "
                  f"them, {len(s.failed)} failed, {s.tokens} tokens, {s.seconds:.0f}s", file=sys.stderr, flush=True)

        at = None if levels is None else [float(x) for x in levels.split(",") if x.strip()]
        id_list = _id_list(ids)
        summary = score_sweep(store, backend, task=task_name, sweep=sweep,
                              kinds=[k.strip() for k in kinds.split(",") if k.strip()], levels=at, limit=limit,
                              ids=id_list, progress=progress)
    except (ConfigError, ModelNotFound, ModelCorrupt, BackendError, ValueError, LookupError,
            FileNotFoundError) as exc:
        fail(str(exc))
    finally:
        store.close()
    rate = summary.tokens / summary.seconds if summary.seconds else 0.0
    console.print(f"sweep {summary.sweep}: {summary.scored} generations scored ({summary.tokens} tokens, "
                  f"{summary.seconds:.0f}s, {rate:.0f} tokens/s), {summary.skipped} already had log-probabilities"
                  + (f", {len(summary.failed)} failed: {summary.failed[:3]}" if summary.failed else ""),
                  highlight=False, soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)


def _id_list(ids: str | None) -> list[str] | None:
    """`--ids`: comma-separated ids, or @file with one id a line; None for all items."""
    if not ids:
        return None
    return Path(ids[1:]).read_text().split() if ids.startswith("@") else [i.strip() for i in ids.split(",") if i.strip()]


def _slm_backend(config: Path | None, slm: str | None):
    """The SLM backend of a config (`--config`), or of the model `--slm` names instead."""
    from ..config import load_config
    from ..models.factory import build_backend

    cfg = load_config(config)
    if slm:
        cfg.slm.model, cfg.slm.model_id = slm, None
    return build_backend(cfg.slm)


@sweep_app.command("verify")
def verify_cmd(
    task_name: str | None = typer.Argument(None, metavar="[TASK]", help="Task of the sweep (if the store has several)."),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s", help="SQLite trace store."),
    sweep: str | None = typer.Option(None, help="Sweep id (if the task has several)."),
    limit: int | None = typer.Option(None, min=1, help="Only the first N items."),
    ids: str | None = typer.Option(None, help="Only these items: comma-separated ids, or @file with one id a line."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config (the SLM's model settings)."),
    slm: str | None = typer.Option(None, help="SLM model name or .gguf path (default: the config's)."),
) -> None:
    """Ask the SLM whether each of its stored greedy answers is correct (AutoMix self-verification, one Yes/No
    token) and store the verdicts, so the `automix` policy replays without a model. Resumable: a stored
    verification is never asked for again."""
    from ..config import ConfigError
    from ..models.base import BackendError
    from ..models.sources import ModelCorrupt, ModelNotFound
    from .verify import verify_sweep

    store = _open(store_path)
    try:
        backend = _slm_backend(config, slm)

        def progress(item: str, done: int, total: int, s) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {done}/{total} {item}: {s.verified} verified ({s.calls} model "
                  f"calls), {s.skipped} had one, {len(s.missing)} without an answer, {len(s.failed)} failed, "
                  f"{s.seconds:.0f}s", file=sys.stderr, flush=True)

        id_list = _id_list(ids)
        summary = verify_sweep(store, backend, task=task_name, sweep=sweep, ids=id_list, limit=limit,
                               progress=progress)
    except (ConfigError, ModelNotFound, ModelCorrupt, BackendError, ValueError, LookupError,
            FileNotFoundError) as exc:
        fail(str(exc))
    finally:
        store.close()
    ps = sorted(summary.p_yes)
    spread = (f"; P(yes) min {ps[0]:.3f}, median {ps[len(ps) // 2]:.3f}, max {ps[-1]:.3f}" if ps else "")
    per = summary.seconds / summary.calls if summary.calls else 0.0
    console.print(f"sweep {summary.sweep}: {summary.verified} answers verified ({summary.calls} model calls, "
                  f"{summary.prompt_tokens} prompt tokens, {summary.seconds:.0f}s, {per:.2f}s a call), "
                  f"{summary.skipped} already were" + spread
                  + (f", {len(summary.missing)} without a stored answer" if summary.missing else "")
                  + (f", {len(summary.failed)} failed: {summary.failed[:3]}" if summary.failed else ""),
                  highlight=False, soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)


@sweep_app.command("status")
def status_cmd(store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s")) -> None:
    """What the store holds: sweeps, items done, generations, model calls."""
    store = _open(store_path)
    out.print_json(json.dumps({"counts": store.counts(), "duplicate_calls": len(store.duplicate_calls()),
                               "in_progress": store.claims(),
                               "sweeps": [{"sweep": s.sweep, "task": s.task, "slm": s.slm, "llm": s.llm,
                                           "items": len(store.item_entries(s.sweep)),
                                           "done": sum(e.done for e in store.item_entries(s.sweep))}
                                          for s in store.sweeps()]}))


@sweep_app.command("labels")
def labels_cmd(
    task_name: str = typer.Argument(..., metavar="TASK"),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s"),
    split: str | None = typer.Option(None),
    sweep: str | None = typer.Option(None, help="Sweep id, when the store holds several for the task."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics and labels as JSON."),
) -> None:
    """Oracle labels n* (smallest passing hint, majority over trials), the paper's filter, statistics."""
    from rich.table import Table

    from .labels import keep, label_item, label_stats

    store = _open(store_path)
    try:
        sweeps = store.item_sweeps(task_name, split, sweep=sweep)
    except LookupError as exc:
        fail(str(exc))
    stats = label_stats(sweeps)
    labels = [label_item(s) for s in sweeps]
    if as_json:
        out.print_json(json.dumps({"stats": stats.to_dict(), "labels": [
            {"item_id": lab.item_id, "kind": lab.kind, "hint_fraction": lab.hint_fraction,
             "hint_tokens": lab.hint_tokens, "llm_correct": lab.llm_correct, "kept": keep(lab)}
            for lab in labels]}))
        return
    out.print(f"{stats.items} items; kept by the filter: {stats.kept}; LLM accuracy {stats.llm_accuracy:.1%}, "
              f"SLM alone {stats.slm_accuracy:.1%}"
              + (f", SLM samples {stats.sample_accuracy:.1%}" if stats.sample_accuracy is not None else "")
              + f"; mean full answer {stats.mean_full_tokens:.0f} LLM tokens", highlight=False)
    t = Table("hint fraction", "items", "SLM+hint accuracy (greedy)", "n* here")
    for f, acc in stats.level_accuracy.items():
        t.add_row(f"{f:.2f}", str(stats.level_counts[f]), f"{acc:.1%}", str(stats.by_fraction.get(f, 0)))
    out.print(t)
    out.print("labels: " + ", ".join(f"{k} {v}" for k, v in stats.kinds.items()), highlight=False)
    for note in stats.notes:
        out.print(f"[dim]note: {note}[/]", highlight=False)


@sweep_app.command("export")
def export_cmd(
    dest: Path = typer.Argument(..., help="Output file: .jsonl or .parquet."),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s"),
    what: str = typer.Option("rows", help="rows (one per graded generation of a sweep) or generations."),
    sweep: str | None = typer.Option(None),
) -> None:
    """Export the store for analysis elsewhere (JSONL, or Parquet with pyarrow)."""
    if what not in ("rows", "generations"):
        fail("--what must be rows or generations")
    store = _open(store_path)
    try:
        n = store.export(dest, what=what, sweep=sweep)
    except (RuntimeError, ValueError) as exc:
        fail(str(exc))
    console.print(f"wrote {n} {what} to {dest}")


@sweep_app.command("pack")
def pack_cmd(
    dest: Path = typer.Argument(..., help="Output file (.jsonl.gz)."),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s"),
    task_name: str | None = typer.Option(None, "--task", help="Task whose sweep to pack (if the store has several)."),
    sweep: str | None = typer.Option(None),
) -> None:
    """Pack a sweep's finished items into a compact file fit for git: every model output, token count,
    grade and item id, but no question text (`shepherd sweep unpack` rebuilds those from the task data)."""
    from .compact import CompactTraceError, export_compact

    store = _open(store_path)
    try:
        summary = export_compact(store, dest, task=task_name, sweep=sweep)
    except (LookupError, CompactTraceError) as exc:
        fail(str(exc))
    size = dest.stat().st_size
    console.print(f"packed {summary.items} {summary.task} items ({summary.generations} generations, "
                  f"{summary.calls} calls) into {dest} ({size / 1e6:.2f} MB)"
                  + (f"; {len(summary.skipped)} unfinished items left out" if summary.skipped else ""),
                  highlight=False)


@sweep_app.command("unpack")
def unpack_cmd(
    files: list[Path] = typer.Argument(..., help="Packed trace files (.jsonl.gz)."),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s", help="Store to rebuild into (created)."),
    data: Path | None = typer.Option(None, help="Task data file or folder (default: the task's usual place)."),
) -> None:
    """Rebuild packed traces into a trace store: question texts come from the task data, and every
    rebuilt request is checked against its stored content key. Items already in the store are skipped."""
    from .compact import CompactTraceError, import_compact
    from .store import StoreError, TraceStore

    try:
        store = TraceStore(store_path)
    except StoreError as exc:
        fail(str(exc))
    for f in files:
        if not f.is_file():
            fail(f"no packed trace file at {f}")
        try:
            summary = import_compact(f, store, data=str(data) if data else None)
        except (CompactTraceError, LookupError, FileNotFoundError) as exc:
            fail(str(exc))
        console.print(f"{f}: {summary.items} {summary.task} items unpacked into {store_path}"
                      + (f" ({len(summary.skipped)} already there)" if summary.skipped else ""), highlight=False)


@sweep_app.command("oracles")
def oracles_cmd(
    task_name: str = typer.Argument(..., metavar="TASK"),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s"),
    split: str | None = typer.Option(None),
    sweep: str | None = typer.Option(None),
    data: Path | None = typer.Option(None, help="Task data file or folder."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Oracle routing, cascading and shepherding from the store (replay: no model is called)."""
    from rich.table import Table

    from ..evaluation.replay import oracle_report

    store = _open(store_path)
    try:
        task = load_task(task_name, data)
        rep = oracle_report(task, store, split=split, sweep=sweep)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        out.print_json(json.dumps(rep))
        return
    t = Table("strategy", "accuracy", "cost (USD)", "cost / LLM-only", "LLM calls")
    for name, r in rep["strategies"].items():
        t.add_row(name, f"{r['accuracy']:.1%}", f"{r['cost_usd']:.6f}", f"{r['cost_ratio']:.3f}", str(r["llm_calls"]))
    out.print(f"{rep['items']} items, sweep {rep['sweep']}")
    out.print(t)
    for note in rep["notes"]:
        out.print(f"[dim]note: {note}[/]", highlight=False)


@sweep_app.command("replay")
def replay_cmd(
    task_name: str = typer.Argument(..., metavar="TASK"),
    policy: str = typer.Option(..., "--policy", "-p", help="Policy name."),
    settings: str = typer.Option("{}", help="Policy settings as JSON, e.g. '{\"tokens\": 32}'."),
    store_path: Path = typer.Option(DEFAULT_STORE, "--store", "-s"),
    split: str | None = typer.Option(None),
    sweep: str | None = typer.Option(None),
    data: Path | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What POLICY would have done on the swept items, from the store alone (no model is called)."""
    from ..evaluation.replay import replay, summarize
    from ..policies.registry import make_policy
    from .cached import MissingGeneration

    store = _open(store_path)
    try:
        task = load_task(task_name, data)
        pol = make_policy(policy, **json.loads(settings))
        records = replay(pol, task, None, store, split=split, sweep=sweep)
    except MissingGeneration as exc:
        fail(str(exc))
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    summary = summarize(records)
    if as_json:
        out.print_json(json.dumps(summary))
        return
    out.print(f"{policy}: accuracy {summary['accuracy']:.1%} on {summary['items']} items, cost "
              f"${summary['cost_usd']:.6f} ({summary['cost_ratio']:.3f} of LLM-only); decisions "
              f"{summary['decisions']}; hints mapped up to the grid: {summary['mapped_hints']}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(sweep_app, name="sweep")
