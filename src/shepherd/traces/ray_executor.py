"""A sweep spread over a Ray cluster: workers hold the models, the driver's machine holds the store.

    shepherd sweep run gsm8k --executor ray [--address HOST:PORT] [--workers N]

Workers are Ray actors (`SweepWorker`), each holding the two model backends built from the sweep's model
configs: local GGUF models loaded once per worker, or HTTP clients of OpenAI-compatible servers (vLLM,
SGLang, llama.cpp servers; one or many). A worker runs a unit exactly as the local executor does
(`run_unit`), against a store proxy: every read and write goes to one `StoreService` actor pinned to the
driver's node, the store's single writer (the executor contract, point 3). A generation is committed
there the moment its call returns, before the worker goes on, so a worker that dies (SIGKILL, a node
lost) costs only what it was generating: the driver hands its unfinished units to another worker, which
finds every stored generation by its key and pays for none of them again.

Ray is an optional extra (`pip install 'llm-shepherd[ray]'`), imported only here.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..models.base import BackendError
from .executor import Executor
from .sweep import SweepUnit, UnitResult

#: how often a unit is handed out again after the worker running it died
MAX_ATTEMPTS = 3


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # an optional extra
        raise BackendError("the Ray executor needs ray: pip install 'llm-shepherd[ray]'") from exc
    return ray


class StoreProxy:
    """What a worker holds as its trace store: each method call runs on the store service and waits for
    it (a write is committed when the call returns). Only the methods a sweep unit uses are forwarded."""

    _METHODS = frozenset({"get", "put", "item_request", "done_plan", "claim", "release", "put_item", "set_full",
                          "put_hint", "put_row", "mark_done", "has_row", "hints", "full_key"})

    def __init__(self, service: Any) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self._METHODS:
            raise AttributeError(f"the store proxy does not forward {name!r}")
        ray = _import_ray()
        remote = self._service.call

        def call(*args: Any, **kwargs: Any) -> Any:
            return ray.get(remote.remote(name, args, kwargs))

        return call


class _StoreService:
    """The one writer of the SQLite store (runs as an actor on the driver's node)."""

    def __init__(self, path: str) -> None:
        from .store import TraceStore

        self.store = TraceStore(path)

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name not in StoreProxy._METHODS:
            raise AttributeError(name)
        return getattr(self.store, name)(*args, **kwargs)

    def pid(self) -> int:
        return os.getpid()


class _SweepWorker:
    """Holds the two backends (built once) and runs units; one event loop, `max_concurrency` units at once
    (several at a time pay off with the batched engine or HTTP servers)."""

    def __init__(self, slm_cfg: dict, llm_cfg: dict, task_name: str, data: str | None, service: Any,
                 prefix_reuse: bool = True) -> None:
        from ..config import ModelConfig
        from ..models.factory import build_backend
        from ..tasks import get_task
        from .cached import CachedBackend
        from .executor import _serves_one_at_a_time
        from .sweep import WorkerContext

        store = StoreProxy(service)
        slm = build_backend(ModelConfig(**slm_cfg))
        llm = build_backend(ModelConfig(**llm_cfg))
        if not prefix_reuse:
            from .prefix import FreshContext

            slm, llm = FreshContext(slm), FreshContext(llm)
        task = get_task(task_name, data) if data is not None else get_task(task_name)
        parallel = not (_serves_one_at_a_time(slm) or _serves_one_at_a_time(llm))
        self.ctx = WorkerContext(CachedBackend(slm, store), CachedBackend(llm, store), task, store,
                                 parallel_calls=parallel)

    async def run(self, unit: SweepUnit) -> UnitResult:
        import traceback

        from .sweep import run_unit

        try:
            res = await run_unit(unit, self.ctx)
        except Exception as exc:  # noqa: BLE001 - one item's failure must not stop the sweep
            res = UnitResult(item_id=unit.item_id, error=f"{type(exc).__name__}: {exc}",
                             extra={"traceback": traceback.format_exc()})
        res.extra["worker"] = f"{socket.gethostname()}:{os.getpid()}"
        return res

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(Executor):
    """Runs units on `workers` Ray actors of a cluster (`address`; None starts a local one on this
    machine). The driver hands each worker `per_worker` units at a time; a unit whose worker died is
    handed to a fresh worker, up to `MAX_ATTEMPTS` times.

    `worker_resources` are what one worker reserves (default one CPU; {"GPU": 1} for a GPU node, or
    `num_cpus` matching the threads a local model uses)."""

    def __init__(self, slm_cfg, llm_cfg, task_name: str, store_path: str | os.PathLike, *, data: str | None = None,
                 address: str | None = None, workers: int = 2, per_worker: int = 1,
                 worker_resources: dict[str, float] | None = None, init_kwargs: dict[str, Any] | None = None,
                 prefix_reuse: bool = True) -> None:
        self.slm_cfg = slm_cfg.model_dump() if hasattr(slm_cfg, "model_dump") else dict(slm_cfg)
        self.llm_cfg = llm_cfg.model_dump() if hasattr(llm_cfg, "model_dump") else dict(llm_cfg)
        self.task_name, self.data = task_name, None if data is None else str(data)
        self.store_path = str(os.path.abspath(store_path))
        self.address, self.workers, self.per_worker = address, max(1, workers), max(1, per_worker)
        self.worker_resources = worker_resources or {"num_cpus": 1}
        self.init_kwargs = init_kwargs or {}
        self.prefix_reuse = prefix_reuse
        self._spawned = 0
        self.service = None
        self.actors: list[Any] = []
        #: the item ids of the attempts whose worker died (each was handed out again)
        self.lost: list[str] = []
        self._started_ray = False

    # -- cluster ----------------------------------------------------------------------------------
    def start(self) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            kw = dict(self.init_kwargs)
            kw.setdefault("ignore_reinit_error", True)
            kw.setdefault("log_to_driver", False)
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                kw.setdefault("include_dashboard", False)
                ray.init(**kw)
            self._started_ray = True
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        Service = ray.remote(num_cpus=0, max_concurrency=1)(_StoreService)
        self.service = Service.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False)).remote(self.store_path)
        ray.get(self.service.pid.remote())  # fail here, not in a worker, if the store cannot be opened
        self._Worker = ray.remote(max_restarts=0, max_task_retries=0)(_SweepWorker)
        self.actors = [self._new_worker() for _ in range(self.workers)]

    @staticmethod
    def _endpoint(cfg: dict, k: int) -> dict:
        """Worker k's copy of a model config: an HTTP model with replicas gets one of its servers, in turn."""
        urls = [cfg.get("base_url"), *cfg.get("replicas", [])]
        if cfg.get("backend") != "openai" or len(urls) < 2:
            return cfg
        return {**cfg, "base_url": urls[k % len(urls)], "replicas": []}

    def _new_worker(self):
        k, self._spawned = self._spawned, self._spawned + 1
        opts = dict(self.worker_resources)
        opts["max_concurrency"] = self.per_worker
        return self._Worker.options(**opts).remote(self._endpoint(self.slm_cfg, k), self._endpoint(self.llm_cfg, k),
                                                   self.task_name, self.data, self.service, self.prefix_reuse)

    def worker_pids(self) -> list[int]:
        ray = _import_ray()
        return ray.get([a.pid.remote() for a in self.actors])

    def shutdown(self) -> None:
        ray = _import_ray()
        for a in self.actors:
            ray.kill(a)
        if self.service is not None:
            ray.kill(self.service)
        self.actors, self.service = [], None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- running ----------------------------------------------------------------------------------
    def run(self, units: Sequence[SweepUnit]) -> Iterator[UnitResult]:
        ray = _import_ray()
        from ray.exceptions import RayActorError

        if self.service is None:
            self.start()
        todo = [(u, 1) for u in units]
        inflight: dict[Any, tuple[SweepUnit, int, int]] = {}  # ref -> (unit, attempt, actor index)
        load = [0] * len(self.actors)

        def requeue(unit: SweepUnit, attempt: int, why: str) -> UnitResult | None:
            self.lost.append(unit.item_id)
            if attempt < MAX_ATTEMPTS:
                todo.insert(0, (unit, attempt + 1))
                return None
            return UnitResult(item_id=unit.item_id, error=f"its worker was lost {attempt} times: {why}")

        try:
            while todo or inflight:
                for i in range(len(self.actors)):
                    while todo and load[i] < self.per_worker:
                        unit, attempt = todo.pop(0)
                        inflight[self.actors[i].run.remote(unit)] = (unit, attempt, i)
                        load[i] += 1
                done, _ = ray.wait(list(inflight), num_returns=1)
                for ref in done:
                    if ref not in inflight:  # requeued with its dead worker's other units
                        continue
                    unit, attempt, i = inflight.pop(ref)
                    load[i] -= 1
                    try:
                        res = ray.get(ref)
                    except RayActorError as exc:  # the worker died (killed, its node lost): retry elsewhere
                        failed = requeue(unit, attempt, str(exc).splitlines()[0])
                        if failed is not None:
                            yield failed
                        if self._is_dead(i):
                            for other in [r for r, (_, _, j) in inflight.items() if j == i]:
                                u, a, _ = inflight.pop(other)
                                load[i] -= 1
                                failed = requeue(u, a, "its worker died")
                                if failed is not None:
                                    yield failed
                            self.actors[i] = self._new_worker()
                        continue
                    yield res
        finally:
            for ref in inflight:
                ray.cancel(ref, force=False)

    def _is_dead(self, i: int) -> bool:
        ray = _import_ray()
        try:
            ray.get(self.actors[i].pid.remote(), timeout=30)
            return False
        except Exception:  # noqa: BLE001 - dead, or unreachable: replace it either way
            with contextlib.suppress(Exception):  # already gone
                ray.kill(self.actors[i])
            return True
