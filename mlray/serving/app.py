"""The Ray Serve application every mlray deploy runs: one MLflow model behind MLflow's protocol.

``import_path: mlray.serving.app:build`` with ``args: {model_uri, model_name, model_version,
...}``; further keys in ``args`` are kept and shown in ``/metadata``. The deployment is named
``MlflowModel``; its ``user_config`` is ``{max_batch_size: int | null, batch_wait_timeout_s:
float}`` and is applied live by ``reconfigure``.

Routes, relative to the app's route prefix (``/<ray.name>``):
    POST /invocations, POST /    MLflow scoring protocol -> {"predictions": ...}
    GET  /ping, /health          200 once the model is loaded
    GET  /version                mlray and MLflow versions, model name and version
    GET  /metadata               model, signature, replica Python, imported library versions,
                                 batching settings and counters, replica identity

Error policy ("a malformed request never gets a 500, and the replica keeps serving"):
- anything wrong with the request itself (content type, size, JSON, format keys, types)
  -> 400/413/415 from ``mlray.serving.protocol``;
- ``MlflowException`` from ``predict`` (signature enforcement: missing column, wrong type)
  -> 400 with MLflow's own ``error_code`` and message, as ``mlflow models serve`` answers;
- any other ``Exception`` from ``predict`` -> 400 ``BAD_REQUEST``, again as MLflow's server
  does: a model library raising ValueError/TypeError on a dtype or shape it cannot take is, in
  practice, bad input, and the model code is not ours to classify further. The traceback is
  logged on the replica;
- only faults outside the request's control are 500 ``INTERNAL_ERROR``: predictions that
  cannot be serialized, MemoryError, or a bug in this module.
No exception escapes a handler, so one bad request never takes the replica down.
"""

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import logging
import os
import platform
import shutil
import socket
import threading
import time
import traceback
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from ray import serve
from ray.serve.metrics import Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from mlray.serving import batch_queue, batching, introspect, model_cache, protocol, timing
from mlray.serving.protocol import ParsedRequest, ScoringError

try:
    from mlray import __version__ as MLRAY_VERSION
except ImportError:  # pragma: no cover - only if mlray.serving were shipped without mlray
    MLRAY_VERSION = "unknown"

logger = logging.getLogger("ray.serve")

DEPLOYMENT_NAME = "MlflowModel"
BATCH_SIZE_METRIC = "mlray_batch_size"
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
STAGE_METRIC = "mlray_request_stage_ms"
STAGE_BOUNDARIES_MS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000]
PREDICT_THREADS_ENV = "MLRAY_PREDICT_THREADS"
INLINE_BYTES_ENV = "MLRAY_INLINE_BODY_BYTES"
# Bodies up to this size are parsed, and their answers rendered, on the event loop: for a
# one-row request that is 0.06-0.7 ms of parsing (protocol.uniform_float_frame) and ~3 us of
# rendering, while each thread hop costs ~0.16 ms and, under the GIL, buys no parallelism.
# Larger bodies go to a thread so the loop stays free for /ping and for reading others.
DEFAULT_INLINE_BYTES = 64 * 1024
_JSON = "application/json"

fastapi_app = FastAPI(title="mlray model server", docs_url=None, redoc_url=None, openapi_url=None)


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Unknown routes and wrong methods answer in MLflow's error shape too."""
    code = "ENDPOINT_NOT_FOUND" if exc.status_code == 404 else protocol.BAD_REQUEST
    message = f"got {request.method} {request.url.path}: {exc.detail}"
    return _error_response(ScoringError(exc.status_code, code, message))


def _error_response(err: ScoringError) -> Response:
    return Response(err.to_json(), status_code=err.status, media_type=_JSON)


def input_hints(metadata: Any) -> protocol.InputHints | None:
    """The model signature's input schema as ``InputHints`` (public MLflow API only)."""
    from mlflow.types import DataType

    schema = metadata.get_input_schema() if metadata is not None else None
    if schema is None:
        return None
    is_tensor = bool(schema.is_tensor_spec())
    named = bool(schema.has_input_names())
    types: list[tuple[str | None, str]] = []
    for spec in schema.inputs:
        name = spec.name if named else None
        if is_tensor:
            types.append((name, str(spec.type)))
        else:
            simple = isinstance(spec.type, DataType)
            types.append((name, spec.type.name if simple else protocol.COMPLEX))
    return protocol.InputHints(is_tensor, named, tuple(types))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit():
        protocol.check_body_size(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise protocol.too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _read_requirements(local_path: str) -> list[str]:
    path = os.path.join(local_path, "requirements.txt")
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except OSError:
        return []


def _main_flavor(flavors: dict[str, Any]) -> str | None:
    others = [name for name in flavors if name != "python_function"]
    if others:
        return others[0]
    return "python_function" if flavors else None


def _signature_dict(meta: Any) -> dict[str, Any] | None:
    signature = getattr(meta, "signature", None)
    if signature is None:
        return None
    result: dict[str, Any] = {}
    for key, value in signature.to_dict().items():
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        result[key] = value
    return result


def process_started_at(pid: int | str = "self") -> float | None:
    """Epoch seconds the process started (Linux /proc), or None where that is unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Field 22, after the parenthesised command name (which may hold spaces).
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def cpu_wait_s(thread: int) -> float | None:
    """Seconds this thread of this process has spent runnable but without a CPU (its run
    queue delay in Linux /proc/self/task/<tid>/schedstat), or None where that is unreadable."""
    try:
        with open(f"/proc/self/task/{thread}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def start_path_wait_s(
    main_at_init: float | None, this_at_init: float | None, this_at_ready: float | None
) -> float | None:
    """The CPU wait along a replica start's path: the worker's main thread from process start
    to `__init__` (Ray's worker start, Serve's replica class), then the thread running
    `__init__` (Serve's user-code thread, or the main thread itself). Summing all threads
    would count Ray's background threads, and waits that overlap, past the wall time."""
    if main_at_init is None or this_at_init is None or this_at_ready is None:
        return None
    return main_at_init + (this_at_ready - this_at_init)


def startup_timeline(
    init_at: float,
    imported_at: float,
    downloaded_at: float,
    loaded_at: float,
    cpu_s: float | None = None,
    cpu_wait: float | None = None,
) -> dict[str, float | None]:
    """The replica's start, step by step: worker process start -> __init__ (Ray's worker and
    runtime_env set-up, imports of this module) -> mlflow imported -> model downloaded ->
    model loaded. Absolute times (epoch s) line up with a load test's clock.

    `cpu_s` is the CPU the process used up to ready (`time.process_time()`, all threads) and
    `cpu_wait` the time the start's path was ready to run but had no CPU. They
    tell a start that computed on a node with no core to spare (a long CPU wait) from one
    that waited on something else (MLflow, a lock, the disk), which wall times cannot."""
    started = process_started_at()
    total = None if started is None else loaded_at - started
    return {
        "process_started_at": None if started is None else round(started, 3),
        "init_at": round(init_at, 3),
        "ready_at": round(loaded_at, 3),
        "process_to_init_s": None if started is None else round(init_at - started, 3),
        "import_mlflow_s": round(imported_at - init_at, 3),
        "download_s": round(downloaded_at - imported_at, 3),
        "load_s": round(loaded_at - downloaded_at, 3),
        "total_s": None if total is None else round(total, 3),
        "cpu_s": None if cpu_s is None else round(cpu_s, 3),
        "cpu_share": None if cpu_s is None or not total or total <= 0 else round(cpu_s / total, 2),
        "cpu_wait_s": None if cpu_wait is None else round(cpu_wait, 3),
    }


def _replica_identity() -> dict[str, Any]:
    identity: dict[str, Any] = {"pid": os.getpid(), "hostname": socket.gethostname()}
    try:
        context = serve.get_replica_context()
    except Exception:  # outside a replica (tests)
        return identity
    replica_id = getattr(context, "replica_id", None)
    identity["replica_id"] = getattr(replica_id, "unique_id", None) or str(
        getattr(context, "replica_tag", replica_id)
    )
    identity["deployment"] = getattr(context, "deployment", None)
    identity["app_name"] = getattr(context, "app_name", None)
    try:
        import ray

        identity["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:
        identity["node_id"] = None
    return identity


def _positive_int_env(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise ValueError(f"got {raw!r} for {name}; expected an integer >= {minimum}")
    return int(raw)


# Everything the class uses is defined above it, and annotations are real objects (no
# `from __future__ import annotations`): Serve pickles the class by value when the decorators
# run, so later globals would be missing in the replica and FastAPI could not resolve
# string annotations such as "Request".
@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(fastapi_app)
class MlflowModel:
    """One replica: the model loaded once, predictions served off the event loop.

    One request's path: the body is read and (if small) parsed on the event loop, then
    ``predict`` runs on the replica's predict thread (directly, or in a batch from mlray's
    batch queue when batching is on), and the answer is rendered on the loop again. Large
    bodies are parsed and rendered on a worker thread instead. Every stage is timed (``/metadata``
    ``timings``, and the ``mlray_request_stage_ms`` metric).
    """

    def __init__(
        self,
        model_uri: str,
        model_name: str | None = None,
        model_version: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        init_at = time.time()
        this_thread = threading.get_native_id()
        main_wait, this_wait = cpu_wait_s(os.getpid()), cpu_wait_s(this_thread)
        import mlflow

        self._model_uri = model_uri
        self._model_name = model_name
        self._model_version = model_version
        self._extra = dict(extra or {})
        self._max_bytes = protocol.max_request_bytes()
        # Fetch explicitly (rather than load_model(model_uri)): from the node's copy when the
        # deploy or an earlier replica left one there (no MLflow call, so a replica starts
        # during an MLflow outage too), and to keep the files: their requirements.txt is what
        # /metadata reports on.
        imported_at = time.time()
        fetched = model_cache.fetch(
            model_uri,
            self._extra.get("run_id"),
            os.environ.get("MLFLOW_TRACKING_URI"),  # as the deploy set it: part of the key
            model_cache.download_from_mlflow,
            model_cache.cache_root(),
        )
        if fetched.note:
            logger.warning("mlray: %s not kept in the node's model cache: %s", model_uri,
                           fetched.note)  # fmt: skip
        self._local_dir = fetched.private_dir
        local_path = fetched.path
        downloaded_at = time.time()
        # MLflow's own load-time checks scan every installed distribution (a third of the
        # load for an xgboost model, on every replica start); mlray checks the pins below.
        self._model = mlflow.pyfunc.load_model(local_path, suppress_warnings=True)
        # Where a replica's start goes (scale-out waits on it): epoch seconds of each step.
        self._startup = {
            **startup_timeline(
                init_at,
                imported_at,
                downloaded_at,
                time.time(),
                time.process_time(),
                start_path_wait_s(main_wait, this_wait, cpu_wait_s(this_thread)),
            ),
            "model_from": fetched.source,
        }
        self._metadata = self._model.metadata
        self._hints = input_hints(self._metadata)
        self._accepts_params = "params" in inspect.signature(self._model.predict).parameters
        self._requirements = _read_requirements(local_path)
        self._mismatches = introspect.requirement_mismatches(self._requirements)
        if self._mismatches:
            logger.warning(
                "mlray: %s runs in an environment that does not meet its pins: %s",
                model_uri,
                "; ".join(self._mismatches),
            )
        logged_python = (self._metadata.flavors.get("python_function") or {}).get("python_version")
        if (
            logged_python
            and logged_python.split(".")[:2] != platform.python_version().split(".")[:2]
        ):
            logger.warning(
                "mlray: %s was logged with Python %s and runs on %s",
                model_uri,
                logged_python,
                platform.python_version(),
            )
        # Predictions run on their own threads (default 1, like `mlflow models serve`'s one
        # sync worker): the event loop stays free for /ping, and models that are not
        # thread-safe are not called concurrently.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=_positive_int_env(PREDICT_THREADS_ENV, 1),
            thread_name_prefix="mlray-predict",
        )
        self._inline_bytes = _positive_int_env(INLINE_BYTES_ENV, DEFAULT_INLINE_BYTES, 0)
        self._timings = timing.StageTimes()
        self._stage_metric = Histogram(
            STAGE_METRIC,
            description="Time of one scored request per stage (read, parse, queue, predict, "
            "serialize, total), in milliseconds.",
            boundaries=STAGE_BOUNDARIES_MS,
            tag_keys=("model", "stage"),
        )
        self._stage_metric.set_default_tags({"model": model_name or model_uri})
        self._batch = batching.BatchConfig()
        # Not @serve.batch: its wait ends only on a full batch or the timeout, so a partial
        # batch waits for requests that are not coming (see mlray.serving.batch_queue).
        self._batches: batch_queue.BatchQueue[ParsedRequest, tuple[Any, float]] = (
            batch_queue.BatchQueue(self._predict_merged)
        )
        self._batch_histogram: Counter[int] = Counter()
        self._batched_rows = 0
        self._batch_metric = Histogram(
            BATCH_SIZE_METRIC,
            description="Requests merged into one predict call by mlray's batch queue.",
            boundaries=BATCH_SIZE_BOUNDARIES,
            tag_keys=("model",),
        )
        self._batch_metric.set_default_tags({"model": model_name or model_uri})
        logger.info(
            "mlray: loaded %s (%s version %s) with flavors %s",
            model_uri,
            model_name,
            model_version,
            sorted(self._metadata.flavors),
        )

    def __del__(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False)
        local_dir = getattr(self, "_local_dir", None)
        if local_dir:
            shutil.rmtree(local_dir, ignore_errors=True)

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Apply ``user_config`` live; Ray calls this at start and on every change."""
        config = batching.parse_user_config(user_config)
        if config.max_batch_size is not None:
            self._batches.configure(config.max_batch_size, config.batch_wait_timeout_s)
        self._batch = config
        logger.info("mlray: batching %s", config)

    def check_health(self) -> None:
        if getattr(self, "_model", None) is None:
            raise RuntimeError("got no loaded model; expected one loaded in __init__")

    # --- routes ----------------------------------------------------------------------------

    @fastapi_app.post("/invocations")
    async def invocations(self, request: Request) -> Response:
        return await self._score(request)

    @fastapi_app.post("/")
    async def invocations_root(self, request: Request) -> Response:
        return await self._score(request)

    @fastapi_app.get("/ping")
    async def ping(self) -> Response:
        return Response(b'{"status": "ok"}', media_type=_JSON)

    @fastapi_app.get("/health")
    async def health(self) -> Response:
        return Response(b'{"status": "ok"}', media_type=_JSON)

    @fastapi_app.get("/version")
    async def version(self) -> Response:
        import mlflow

        return Response(
            protocol.dumps_json(
                {
                    "mlray": MLRAY_VERSION,
                    "mlflow": mlflow.__version__,
                    "model_name": self._model_name,
                    "model_version": self._model_version,
                    "model_uri": self._model_uri,
                }
            ),
            media_type=_JSON,
        )

    @fastapi_app.get("/metadata")
    async def metadata(self) -> Response:
        return Response(protocol.dumps_json(self.describe()), media_type=_JSON)

    # --- scoring ---------------------------------------------------------------------------

    async def _score(self, request: Request) -> Response:
        try:
            t_start = time.perf_counter()
            # On its way to the predictor until parsed: a batch gathering waits for it. No
            # await between leaving this block and joining the queue (_predict_one).
            with self._batches.incoming():
                body = await read_body(request, self._max_bytes)
                t_read = time.perf_counter()
                small = len(body) <= self._inline_bytes
                args = (body, request.headers.get("content-type"), self._hints, self._max_bytes)
                if small:
                    parsed = protocol.parse_request(*args)
                else:
                    parsed = await asyncio.to_thread(protocol.parse_request, *args)
            t_parsed = time.perf_counter()
            outcome, predict_s = await self._predict_one(parsed)
            t_predicted = time.perf_counter()
            if isinstance(outcome, ScoringError):
                raise outcome
            if small:
                answer = protocol.predictions_body(outcome)
            else:
                answer = await asyncio.to_thread(protocol.predictions_body, outcome)
            t_end = time.perf_counter()
            self._record_stages(
                read=t_read - t_start,
                parse=t_parsed - t_read,
                queue=max(0.0, t_predicted - t_parsed - predict_s),
                predict=predict_s,
                serialize=t_end - t_predicted,
                total=t_end - t_start,
            )
            return Response(answer, media_type=_JSON)
        except ScoringError as err:
            return _error_response(err)
        except Exception as ex:
            logger.error("mlray: internal error while scoring:\n%s", traceback.format_exc())
            return _error_response(
                ScoringError(
                    500,
                    protocol.INTERNAL_ERROR,
                    f"Internal error while scoring: {type(ex).__name__}: {ex}",
                )
            )

    def _record_stages(self, **seconds: float) -> None:
        for stage, value in seconds.items():
            self._timings.record(stage, value)
            self._stage_metric.observe(value * 1e3, tags={"stage": stage})

    async def _predict_one(self, parsed: ParsedRequest) -> tuple[Any, float]:
        """(predictions or ScoringError, seconds ``predict`` took) for one request.

        With batching on, a request that can be merged joins the batch queue, which closes a
        batch as soon as nothing more is on its way: alone, a request is predicted at once.
        Others go straight to the predict thread.
        """
        if batching.joins_batch(self._batch, batching.merge_key(parsed) is not None):
            return await self._batches.submit(parsed)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed_outcome, parsed)

    def _count_batch(self, size: int, rows: int) -> None:
        self._batch_histogram[size] += 1
        self._batched_rows += rows
        self._batch_metric.observe(size)

    def _predict(self, data: Any, params: dict[str, Any] | None) -> Any:
        """``PyFuncModel.predict`` with MLflow's error mapping (see the module docstring)."""
        from mlflow.exceptions import MlflowException

        try:
            if self._accepts_params:
                return self._model.predict(data, params=params)
            if params:
                logger.warning("mlray: model's predict takes no params; ignoring %s", params)
            return self._model.predict(data)
        except MlflowException as ex:
            return ScoringError(400, str(ex.error_code), f"Failed to predict data. Error: {ex}")
        except MemoryError:
            raise
        except Exception as ex:
            logger.warning("mlray: predict raised on the input:\n%s", traceback.format_exc())
            return ScoringError(
                400,
                protocol.BAD_REQUEST,
                "Encountered an unexpected error while evaluating the model. Verify that the "
                "input is compatible with the model for inference. "
                f"Error: {type(ex).__name__}: {ex}",
            )

    def _outcome(self, parsed: ParsedRequest) -> Any:
        """Predictions for one request, or the ScoringError it earned."""
        return self._predict(parsed.data, parsed.params)

    def _timed_outcome(self, parsed: ParsedRequest) -> tuple[Any, float]:
        start = time.perf_counter()
        outcome = self._outcome(parsed)
        return outcome, time.perf_counter() - start

    async def _predict_merged(self, items: list[ParsedRequest]) -> list[tuple[Any, float]]:
        """One batch: merge what can be merged, predict, hand back each caller's rows.

        Each caller gets (its predictions or ScoringError, seconds the batch's predict took).
        """
        self._count_batch(len(items), sum(item.n_rows for item in items))
        loop = asyncio.get_running_loop()
        results, elapsed = await loop.run_in_executor(
            self._executor, self._timed_outcomes_merged, items
        )
        return [(result, elapsed) for result in results]

    def _timed_outcomes_merged(self, items: list[ParsedRequest]) -> tuple[list[Any], float]:
        start = time.perf_counter()
        results = self._outcomes_merged(items)
        return results, time.perf_counter() - start

    def _outcomes_merged(self, items: list[ParsedRequest]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        for group in batching.group_for_merge(items):
            if len(group) > 1:
                merged, lengths = batching.merge_frames([items[i].data for i in group])
                predictions = self._predict(merged, None)
                if not isinstance(predictions, ScoringError):
                    try:
                        pieces = batching.split_predictions(predictions, lengths)
                    except ValueError as ex:
                        logger.warning("mlray: cannot split merged predictions (%s)", ex)
                    else:
                        for i, piece in zip(group, pieces, strict=True):
                            results[i] = piece
                        continue
            # Alone, or the merged call failed: one bad request must not fail its neighbours,
            # and each caller gets exactly the answer it would get unbatched.
            for i in group:
                results[i] = self._outcome(items[i])
        return results

    # --- metadata --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Everything ``/metadata`` reports; library versions are read live in this process."""
        import mlflow

        meta = self._metadata
        flavors = dict(meta.flavors or {})
        pyfunc_conf = flavors.get("python_function", {}) or {}
        requirement_dists = introspect.requirement_names(self._requirements)
        return {
            "model_name": self._model_name,
            "model_version": self._model_version,
            "model_uri": self._model_uri,
            "run_id": getattr(meta, "run_id", None),
            "model_uuid": getattr(meta, "model_uuid", None),
            "model_id": getattr(meta, "model_id", None),
            "artifact_path": getattr(meta, "artifact_path", None),
            "utc_time_created": getattr(meta, "utc_time_created", None),
            "flavors": sorted(flavors),
            "flavor": _main_flavor(flavors),
            "loader_module": pyfunc_conf.get("loader_module"),
            "signature": _signature_dict(meta),
            "python_version": platform.python_version(),
            "python_version_logged": pyfunc_conf.get("python_version"),
            "mlflow_version": mlflow.__version__,
            "mlflow_version_logged": getattr(meta, "mlflow_version", None),
            "mlray_version": MLRAY_VERSION,
            "requirements": list(self._requirements),
            "libraries": introspect.library_versions(requirement_dists),
            "requirement_mismatches": list(self._mismatches),
            "flavor_libraries": introspect.flavor_libraries(flavors),
            "batching": {
                "enabled": self._batch.max_batch_size is not None,
                "max_batch_size": self._batch.max_batch_size,
                "batch_wait_timeout_s": self._batch.batch_wait_timeout_s,
                "batch_size_histogram": {
                    str(size): count for size, count in sorted(self._batch_histogram.items())
                },
                "batches": sum(self._batch_histogram.values()),
                "requests_batched": sum(s * c for s, c in self._batch_histogram.items()),
                "rows_batched": self._batched_rows,
                "predicted_at_once": self._batches.at_once,
                "closed_by": dict(self._batches.closed_by),
                "metric": BATCH_SIZE_METRIC,
            },
            "timings": {
                "stages_ms": self._timings.snapshot(),
                "inline_body_bytes": self._inline_bytes,
                "metric": STAGE_METRIC,
            },
            "max_request_bytes": self._max_bytes,
            "replica": _replica_identity(),
            "startup": self._startup,
            "args": self._extra,
        }


def build(args: dict[str, Any]) -> serve.Application:
    """Application builder named by ``import_path: mlray.serving.app:build``.

    ``args`` needs ``model_uri``; ``model_name`` and ``model_version`` are reported as given;
    any other keys are kept verbatim for ``/metadata``.
    """
    args = dict(args or {})
    model_uri = args.pop("model_uri", None)
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise ValueError(
            f"got {model_uri!r} for args.model_uri; expected a model URI such as 'models:/name/3'"
        )
    model_name = args.pop("model_name", None)
    model_version = args.pop("model_version", None)
    return MlflowModel.bind(
        model_uri=model_uri,
        model_name=None if model_name is None else str(model_name),
        model_version=None if model_version is None else str(model_version),
        extra=args,
    )


__all__ = ["DEPLOYMENT_NAME", "MlflowModel", "build", "fastapi_app", "input_hints"]
