"""vLLM's engine metrics exported as Triton custom metrics, under the official backend's names.

The names and labels are those of Triton's official vLLM backend (``vllm:time_per_output_token_
seconds`` for the inter-token latency), plus the gauges and request histograms it lacks, under
vLLM's own names. A vLLM stat logger receives scheduler and iteration stats on the engine's event
loop after every engine step. Sending each value to Triton is a round trip to the server process,
so ``record`` only folds the stats into a pending batch (counters summed, gauges overwritten,
histogram observations listed), and a flusher thread pushes each batch to Triton a few times a
second. Before a request's final response the backend asks for a push (``when_pushed``) and waits
for it, so that a scrape right after a request completes sees it; the push runs on the flusher
thread, where the finals of many requests share one, never on the thread that sends responses.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import triton_python_backend_utils as pb_utils
from vllm.config import VllmConfig
from vllm.v1.metrics.loggers import PrometheusStatLogger, StatLoggerBase
from vllm.v1.metrics.stats import IterationStats, SchedulerStats

from .histogram import fold, le_label

FLUSH_SECONDS = 0.25
# Observed once per generated token: folded locally, exported as counters (histogram.py).
FOLDED = "vllm:time_per_output_token_seconds"

COUNTERS = {
    "vllm:prompt_tokens_total": "Number of prefill tokens processed.",
    "vllm:generation_tokens_total": "Number of generation tokens processed.",
    "vllm:num_preemptions_total": "Cumulative number of preemptions from the engine.",
    "vllm:request_success_total": "Count of successfully processed requests, by finish reason.",
}
GAUGES = {
    "vllm:num_requests_running": "Number of requests in model execution batches.",
    "vllm:num_requests_waiting": "Number of requests waiting to be processed.",
    "vllm:kv_cache_usage_perc": "KV-cache usage. 1 means 100 percent usage.",
    "vllm:cache_config_info": "Information of the KV cache configuration, in its labels.",
}
# With LoRA: which adapters requests run and wait on, in its labels (vLLM's own gauge, which
# inference gateways read); set to the time of the update, as vLLM does, so the latest shows.
LORA_INFO = "vllm:lora_requests_info"
_LATENCY = [
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
]
_TTFT = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]
_ITL = [
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
]


def token_buckets(max_value: int) -> list[float]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value``."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return buckets
            buckets.append(float(value))
        exponent += 1


def histograms(max_model_len: int) -> dict[str, tuple[str, list[float]]]:
    """Histogram name -> (description, buckets)."""
    tokens = token_buckets(max_model_len)
    return {
        "vllm:time_to_first_token_seconds": ("Time to first token in seconds.", _TTFT),
        "vllm:time_per_output_token_seconds": ("Time per output token in seconds.", _ITL),
        "vllm:e2e_request_latency_seconds": ("End to end request latency in seconds.", _LATENCY),
        "vllm:request_queue_time_seconds": ("Time spent waiting in seconds.", _LATENCY),
        "vllm:request_inference_time_seconds": ("Time spent running in seconds.", _LATENCY),
        "vllm:request_prefill_time_seconds": ("Time spent in prefill in seconds.", _LATENCY),
        "vllm:request_decode_time_seconds": ("Time spent in decode in seconds.", _LATENCY),
        "vllm:request_prompt_tokens": ("Number of prefill tokens per request.", tokens),
        "vllm:request_generation_tokens": ("Number of generated tokens per request.", tokens),
        "vllm:request_params_n": ("The n request parameter.", [1, 2, 5, 10, 20]),
        "vllm:request_params_max_tokens": ("The max_tokens request parameter.", tokens),
    }


class _Batch:
    """Stats folded since the last flush."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], float] = defaultdict(float)
        self.gauges: dict[str, float] = {}
        self.observations: dict[str, list[float]] = defaultdict(list)
        self.lora: tuple[str, str] | None = None  # running, waiting adapters (comma-separated)


class TritonMetrics:
    """The Triton metric families of one model, and the thread that updates them."""

    def __init__(self, labels: dict[str, str], vllm_config: VllmConfig) -> None:
        self._labels = labels
        self._families: dict[str, Any] = {}
        self._metrics: dict[tuple[str, str], Any] = {}
        self._histograms = histograms(vllm_config.model_config.max_model_len)
        self.histograms_supported = hasattr(pb_utils.MetricFamily, "HISTOGRAM")
        for name, help_text in COUNTERS.items():
            self._family(name, help_text, pb_utils.MetricFamily.COUNTER)
        for name, help_text in GAUGES.items():
            self._family(name, help_text, pb_utils.MetricFamily.GAUGE)
        if self.histograms_supported:
            for name, (help_text, _) in self._histograms.items():
                if name != FOLDED:
                    self._family(name, help_text, pb_utils.MetricFamily.HISTOGRAM)
        folded_help, self._folded_bounds = self._histograms[FOLDED]
        for suffix in ("_bucket", "_sum", "_count"):
            self._family(FOLDED + suffix, folded_help, pb_utils.MetricFamily.COUNTER)
        for bound in [*self._folded_bounds, float("inf")]:  # every bucket shows, at 0 first
            self._labelled(FOLDED + "_bucket", {"le": le_label(bound)})
        self._labelled(FOLDED + "_sum", {})
        self._labelled(FOLDED + "_count", {})
        lora = vllm_config.lora_config
        self._max_lora = None if lora is None else str(lora.max_loras)
        if self._max_lora is not None:
            self._family(LORA_INFO, "Running stats on lora requests.", pb_utils.MetricFamily.GAUGE)
        cache_info = {k: str(v) for k, v in vllm_config.cache_config.metrics_info().items()}
        self._families["vllm:cache_config_info"].Metric(labels={**labels, **cache_info}).set(1)
        for name in GAUGES:  # exported from the start (at 0), not from the first periodic flush
            if name != "vllm:cache_config_info":
                self._metric(name).set(0.0)
        self._batch = _Batch()
        self._lock = threading.Lock()
        # Held while a batch goes to Triton: a flush returns only once everything recorded before
        # it was pushed, even by a flush already under way on another thread.
        self._push_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._waiters: list[Callable[[], None]] = []  # called after the next push (under _lock)
        self._thread = threading.Thread(target=self._flush_loop, name="tritonvllm-metrics")
        self._thread.start()

    def record(self, scheduler: SchedulerStats | None, iteration: IterationStats | None) -> None:
        """Fold one engine step's stats into the pending batch (cheap; runs on the engine loop)."""
        with self._lock:
            batch = self._batch
            if scheduler is not None:
                batch.gauges["vllm:num_requests_running"] = scheduler.num_running_reqs
                batch.gauges["vllm:num_requests_waiting"] = scheduler.num_waiting_reqs
                batch.gauges["vllm:kv_cache_usage_perc"] = scheduler.kv_cache_usage
                if self._max_lora is not None:
                    batch.lora = (
                        ",".join(scheduler.running_lora_adapters),
                        ",".join(scheduler.waiting_lora_adapters),
                    )
            if iteration is None:
                return
            batch.counters["vllm:prompt_tokens_total", ""] += iteration.num_prompt_tokens
            batch.counters["vllm:generation_tokens_total", ""] += iteration.num_generation_tokens
            batch.counters["vllm:num_preemptions_total", ""] += iteration.num_preempted_reqs
            seen = batch.observations
            seen["vllm:time_to_first_token_seconds"] += iteration.time_to_first_tokens_iter
            seen["vllm:time_per_output_token_seconds"] += iteration.inter_token_latencies_iter
            seen["vllm:request_params_n"] += iteration.n_params_iter
            for done in iteration.finished_requests:
                batch.counters["vllm:request_success_total", str(done.finish_reason)] += 1
                # The engine's own, from arrival to its last output (as vLLM's /metrics).
                seen["vllm:e2e_request_latency_seconds"].append(done.e2e_latency)
                seen["vllm:request_queue_time_seconds"].append(done.queued_time)
                seen["vllm:request_inference_time_seconds"].append(done.inference_time)
                seen["vllm:request_prefill_time_seconds"].append(done.prefill_time)
                seen["vllm:request_decode_time_seconds"].append(done.decode_time)
                seen["vllm:request_prompt_tokens"].append(done.num_prompt_tokens)
                seen["vllm:request_generation_tokens"].append(done.num_generation_tokens)
                if done.max_tokens_param is not None:
                    seen["vllm:request_params_max_tokens"].append(done.max_tokens_param)

    def close(self) -> None:
        """Flush what is pending, stop the thread and release the Triton metric objects.

        They must go while the stub still runs: freed at interpreter exit, they crash it.
        """
        self._stop.set()
        self._wake.set()
        self._thread.join()
        with self._push_lock, self._lock:
            self._metrics.clear()
            self._families.clear()

    def pushes_held(self) -> threading.Lock:
        """Held, no metric goes to Triton (for a message that must not race with pushes)."""
        return self._push_lock

    def when_pushed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the flusher thread) once all recorded so far is in Triton."""
        with self._lock:
            stopped = self._stop.is_set()
            if not stopped:
                self._waiters.append(callback)
        if stopped:
            callback()
            return
        self._wake.set()

    def _flush_loop(self) -> None:
        gauges_pushed = time.monotonic()
        while True:
            # At once when a final waits; every FLUSH_SECONDS at least, with the gauges (which
            # describe the engine now, not a request: a final need not pay for them).
            self._wake.wait(max(0.0, gauges_pushed + FLUSH_SECONDS - time.monotonic()))
            self._wake.clear()
            stopping = self._stop.is_set()
            with self._lock:
                waiters, self._waiters = self._waiters, []
            gauges = stopping or time.monotonic() >= gauges_pushed + FLUSH_SECONDS
            if gauges:
                gauges_pushed = time.monotonic()
            try:
                self.flush(gauges=gauges)
            except Exception as err:  # a failed push must not stop the thread or hold a final
                pb_utils.Logger.log_warn(f"[tritonvllm] metrics not pushed: {err}")
            finally:
                for callback in waiters:
                    with contextlib.suppress(Exception):  # e.g. its event loop is closed
                        callback()
            if stopping:
                return

    def flush(self, gauges: bool = True) -> None:
        """Push everything recorded so far to Triton (from any thread).

        ``gauges=False`` leaves the gauges to the next periodic flush: they describe the engine
        now, not a request, and the final-response path should pay only for what it must.
        """
        with self._push_lock:
            with self._lock:
                batch, self._batch = self._batch, _Batch()
                if not gauges:
                    self._batch.gauges, batch.gauges = batch.gauges, {}
                    self._batch.lora, batch.lora = batch.lora, None
                if not self._families:
                    return
            self._push(batch)

    def _push(self, batch: _Batch) -> None:
        for (name, reason), value in batch.counters.items():
            if value:
                self._metric(name, reason).increment(value)
        for name, value in batch.gauges.items():
            self._metric(name).set(float(value))
        if batch.lora is not None:
            running, waiting = batch.lora
            labels = {"max_lora": str(self._max_lora), "waiting_lora_adapters": waiting}
            self._labelled(LORA_INFO, {**labels, "running_lora_adapters": running}).set(time.time())
        for name, values in batch.observations.items():
            if name == FOLDED:
                self._push_folded(values)
            elif self.histograms_supported:
                metric = self._metric(name)
                for value in values:
                    metric.observe(float(value))

    def _push_folded(self, values: list[float]) -> None:
        """One increment per bucket that changed, instead of one observe() per token."""
        folded = fold(self._folded_bounds, values)
        if not folded.count:
            return
        bounds = [*self._folded_bounds, float("inf")]
        for bound, hits in zip(bounds, folded.buckets, strict=True):
            if hits:
                self._labelled(FOLDED + "_bucket", {"le": le_label(bound)}).increment(hits)
        self._labelled(FOLDED + "_sum", {}).increment(folded.total)
        self._labelled(FOLDED + "_count", {}).increment(folded.count)

    def _labelled(self, name: str, extra: dict[str, str]) -> Any:
        key = (name, ",".join(f"{k}={v}" for k, v in extra.items()))
        if key not in self._metrics:
            family = self._families[name]
            self._metrics[key] = family.Metric(labels={**self._labels, **extra})
        return self._metrics[key]

    def _family(self, name: str, help_text: str, kind: Any) -> None:
        self._families[name] = pb_utils.MetricFamily(name=name, description=help_text, kind=kind)

    def _metric(self, name: str, finished_reason: str = "") -> Any:
        key = (name, finished_reason)
        if key not in self._metrics:
            labels = dict(self._labels)
            if finished_reason:
                labels["finished_reason"] = finished_reason
            family = self._families[name]
            if name in self._histograms:
                self._metrics[key] = family.Metric(labels=labels, buckets=self._histograms[name][1])
            else:
                self._metrics[key] = family.Metric(labels=labels)
        return self._metrics[key]


class TritonStatLogger(StatLoggerBase):
    """The vLLM stat logger that feeds ``TritonMetrics``."""

    def __init__(self, vllm_config: VllmConfig, engine_index: int, sink: TritonMetrics) -> None:
        self._sink = sink

    def record(
        self,
        scheduler_stats: SchedulerStats | None,
        iteration_stats: IterationStats | None,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        self._sink.record(scheduler_stats, iteration_stats)

    def log_engine_initialized(self) -> None:
        pass


class StatLoggerFactory:
    """Builds the Triton metrics once the engine's VllmConfig is known (vLLM calls it)."""

    def __init__(self, labels: dict[str, str]) -> None:
        self._labels = labels
        self.metrics: TritonMetrics | None = None

    def __call__(self, vllm_config: VllmConfig, engine_index: int = 0) -> TritonStatLogger:
        if self.metrics is None:
            self.metrics = TritonMetrics(self._labels, vllm_config)
        return TritonStatLogger(vllm_config, engine_index, self.metrics)

    def when_pushed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the counters and histograms recorded so far are pushed."""
        if self.metrics is None:
            callback()
        else:
            self.metrics.when_pushed(callback)

    def pushes_held(self) -> contextlib.AbstractContextManager[object]:
        """A context in which no metric push runs."""
        if self.metrics is None:
            return contextlib.nullcontext()
        return self.metrics.pushes_held()

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()


class NoPrometheusStatLogger(PrometheusStatLogger):
    """Takes the place of vLLM's own Prometheus logger when nothing serves its registry.

    AsyncLLM adds that logger beside ours unless one of its kind is given; it updates Python
    histograms on every engine step (about 5% of the stub's CPU under load). Without the OpenAI
    port nothing exports that registry, so this one records nothing.
    """

    def __init__(self, vllm_config: VllmConfig, engine_indexes: list[int] | None = None) -> None:
        self.engine_indexes = engine_indexes or [0]

    def record(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record_sleep_state(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record_admission_rejection(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_engine_initialized(self) -> None:
        pass

    def log(self) -> None:
        pass
