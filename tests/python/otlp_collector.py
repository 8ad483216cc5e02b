"""An OTLP trace receiver for the tests (tests/front_ends/traces.rs, tests/stream/traces.rs): the
OpenTelemetry project's own generated classes (opentelemetry-proto) decode every export pixguard
makes, and each span is printed as one JSON line, with its resource's attributes, the transport it
came by and the headers (gRPC metadata) of its call, for the test to read.

    python otlp_collector.py PORT [--http HTTP_PORT] [--quiet] [--refuse N --refuse-with KIND]

OTLP/gRPC on PORT; with --http, OTLP/HTTP (binary protobuf POSTed to /v1/traces, gzip or not) on
HTTP_PORT too. Prints `listening` once the ports are bound. Answers every export with an empty
ExportTraceServiceResponse (all spans taken). With --quiet it decodes and discards (the receiver of
benches/traces/overhead.sh, where printing would be the bottleneck). With --refuse N the first N
exports (over either transport) are refused, printing {"refused": TRANSPORT} for each: KIND
`unavailable` is gRPC UNAVAILABLE or HTTP 503 with Retry-After: 0 (a collector restarting, which
the OTLP specification says to retry), `invalid` is INVALID_ARGUMENT or HTTP 400 (not to retry),
`exhausted` is RESOURCE_EXHAUSTED with a google.rpc.RetryInfo detail of 0.2 s (to retry after it)
or HTTP 429 with Retry-After: 0, `exhausted-bare` RESOURCE_EXHAUSTED without one (not to retry)."""

import gzip
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(pairs):
    return {kv.key: value(kv.value) for kv in pairs}


def print_spans(request, transport, headers):
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                line = {
                    "transport": transport,
                    "headers": headers,
                    "resource": resource,
                    "scope": scope_spans.scope.name,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "trace_state": span.trace_state,
                    "flags": span.flags,
                    "name": span.name,
                    "kind": span.kind,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "attributes": attributes(span.attributes),
                    "status_code": span.status.code,
                    "status_message": span.status.message,
                }
                print(json.dumps(line), flush=True)


def retry_info(seconds):
    """A google.rpc.Status whose RetryInfo asks the client to wait `seconds`, serialised as the
    `grpc-status-details-bin` trailer carries it."""
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=int(seconds * 1e9))))
    status = status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message="refused by the test's collector", details=[detail]
    )
    return status.SerializeToString()


class Refusals:
    """The first `count` exports are refused as `kind` says."""

    def __init__(self, count, kind):
        self.left = count
        self.kind = kind
        self.lock = threading.Lock()

    def take(self, transport):
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
        print(json.dumps({"refused": transport}), flush=True)
        return True


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, quiet, refusals):
        self.quiet = quiet
        self.refusals = refusals

    def Export(self, request, context):
        if self.refusals.take("grpc"):
            code = {
                "unavailable": grpc.StatusCode.UNAVAILABLE,
                "invalid": grpc.StatusCode.INVALID_ARGUMENT,
                "exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
                "exhausted-bare": grpc.StatusCode.RESOURCE_EXHAUSTED,
            }
            if self.refusals.kind == "exhausted":
                context.set_trailing_metadata((("grpc-status-details-bin", retry_info(0.2)),))
            context.abort(code[self.refusals.kind], "refused by the test's collector")
        if not self.quiet:
            headers = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            print_spans(request, "grpc", headers)
        return trace_service_pb2.ExportTraceServiceResponse()


def http_handler(quiet, refusals):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if refusals.take("http"):
                status = {"unavailable": 503, "invalid": 400, "exhausted": 429}[refusals.kind]
                text = b"refused by the test's collector"
                self.send_response(status)
                if status in (429, 503):
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(415)
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            if not quiet:
                headers = {k.lower(): v for k, v in self.headers.items()}
                print_spans(request, "http", headers)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    return Handler


def main():
    port = int(sys.argv[1])
    quiet = "--quiet" in sys.argv[2:]
    refusals = Refusals(0, "unavailable")
    if "--refuse" in sys.argv:
        kind = sys.argv[sys.argv.index("--refuse-with") + 1]
        refusals = Refusals(int(sys.argv[sys.argv.index("--refuse") + 1]), kind)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(quiet, refusals), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    if "--http" in sys.argv:
        http_port = int(sys.argv[sys.argv.index("--http") + 1])
        http = ThreadingHTTPServer(("127.0.0.1", http_port), http_handler(quiet, refusals))
        threading.Thread(target=http.serve_forever, daemon=True).start()
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
