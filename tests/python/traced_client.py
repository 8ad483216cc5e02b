"""A caller traced by the OpenTelemetry Python SDK: inside a span of its own it scores one
transaction through pixguard_client, whose call carries the span (W3C traceparent, injected by
the SDK's own propagator), and prints that span's ids for tests/front_ends/traces.rs to find as
the parent of pixguard's span.

    python traced_client.py URL TRANSACTION_JSON
"""
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pixguard_client import PixguardClient


def main() -> int:
    url, tx = sys.argv[1], json.loads(sys.argv[2])
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    with trace.get_tracer("psp.checkout").start_as_current_span("pix.authorize") as span:
        context = span.get_span_context()
        with PixguardClient(url) as client:
            [answer] = client.score([tx])
    print(json.dumps({
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "sampled": context.trace_flags.sampled,
        "score": answer["score"],
        "recorded": [s.name for s in spans.get_finished_spans()],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
