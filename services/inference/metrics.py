"""Prometheus metrics of the inference service, on a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class InferenceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("aion_inference_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.request_seconds = Histogram("aion_inference_request_seconds", "HTTP request latency", ["route"],
                                         registry=r, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
        self.generated_tokens = Counter("aion_inference_generated_tokens", "Tokens generated", registry=r)
        self.prompt_tokens = Counter("aion_inference_prompt_tokens", "Prompt tokens processed", registry=r)
        self.time_to_first_token = Histogram("aion_inference_time_to_first_token_seconds",
                                             "Time from submission to the first generated token", registry=r,
                                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
        self.queue_depth = Gauge("aion_inference_queue_depth", "Requests waiting for a batch slot", registry=r)
        self.running = Gauge("aion_inference_running_sequences", "Sequences in the running batch", registry=r)
        self.batch_size = Histogram("aion_inference_batch_size", "Rows per decode step", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        # Where a decode step's time goes: the forward as the host sees it launch (on a GPU most of the work is
        # still queued then), and choosing the tokens (which waits for the forward) plus emitting text.
        self.step_forward_seconds = Histogram("aion_inference_step_forward_seconds",
                                              "Decode step: launching the forward", registry=r,
                                              buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1))
        self.step_tokens_seconds = Histogram("aion_inference_step_tokens_seconds",
                                             "Decode step: choosing tokens (waits for the forward) and emitting",
                                             registry=r, buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1))
        self.prefill_seconds = Histogram("aion_inference_prefill_seconds", "One prompt's prefill and first token",
                                         registry=r, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
        self.finished = Counter("aion_inference_sequences_finished", "Finished sequences by reason",
                                ["reason"], registry=r)
        self.errors = Counter("aion_inference_errors", "Generation errors", registry=r)
        self.adapter_active = Gauge("aion_inference_adapter_active", "1 for the adapter now active",
                                    ["adapter"], registry=r)
        self.adapter_sequences = Gauge("aion_inference_adapter_sequences",
                                       "Sequences waiting or running per adapter (base-model ones are not listed)",
                                       ["adapter"], registry=r)

        # Gauges set from the prefix cache's own counters at each scrape (they only grow, save on a clear).
        self.prefix_hit_tokens = Gauge("aion_inference_prefix_cache_hit_tokens",
                                       "Prompt tokens whose keys and values came from the prefix cache", registry=r)
        self.prefix_lookup_tokens = Gauge("aion_inference_prefix_cache_lookup_tokens",
                                          "Prompt tokens looked up in the prefix cache", registry=r)
        self.prefix_bytes = Gauge("aion_inference_prefix_cache_bytes", "Bytes held by the prefix cache", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
