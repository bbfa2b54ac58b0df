"""One chat call through the official openai SDK under an OpenTelemetry
instrumentation library, exported as OTLP: what the three client programs
(openai_v2_client.py, openlit_client.py, traceloop_client.py) share.

Each program sets its library up with the exporter built here and calls
`run`, which
- makes one chat completion against the mock upstream (`tollgate
  mock-upstream`, OpenAI's wire format), streamed or not, inside a parent
  span of its own (`otlp-client-call`), so the call's trace id is known;
- flushes the spans to `tollgate ingest` (OTLP/HTTP protobuf or OTLP/gRPC,
  `Authorization: Bearer <ingest key>`), or with `--capture FILE` writes
  them to FILE as one OTLP/JSON export request instead (the fixtures under
  fixtures/ are such captures);
- prints one JSON line: the trace id, every span it ended (name, ids,
  attributes), what the mock reported (model, usage) and how the export
  went. It exits 1 when the export failed, with the exporter's reason on
  stderr: a test then fails on the cause, not on a missing row.
"""

import argparse
import faulthandler
import json
import logging
import sys
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

PROMPT = "Say hello to the tollgate OpenTelemetry test in five words"
# A program that hangs prints where every thread is and exits, so a test
# that waits for it learns why instead of only that it was killed.
HANG_SECONDS = 90
faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)


def parse_args(library):
    parser = argparse.ArgumentParser(
        description=f"One openai chat call instrumented by {library}, exported as OTLP."
    )
    parser.add_argument(
        "--endpoint",
        help="tollgate ingest's OTLP endpoint: http://HOST:PORT for http/protobuf "
        "(/v1/traces is appended), HOST:PORT for grpc",
    )
    parser.add_argument("--protocol", choices=["http/protobuf", "grpc"], default="http/protobuf")
    parser.add_argument("--ingest-key", default="", help="sent as Authorization: Bearer KEY")
    parser.add_argument(
        "--mock-url", required=True, help="the mock upstream's OpenAI base URL, e.g. http://127.0.0.1:8787/v1"
    )
    parser.add_argument("--api-key", default="sk-mock", help="the key the mock upstream expects")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--max-tokens", type=int, default=7, help="the mock answers exactly this many tokens")
    parser.add_argument("--stream", action="store_true", help="stream the answer (with usage in the last chunk)")
    parser.add_argument(
        "--mock-error-shape",
        metavar="SHAPE",
        help="ask the mock to answer with this provider error (x-mock-error-shape, e.g. openai_quota); "
        "the SDK's exception is reported as the reply, without retries",
    )
    parser.add_argument("--service-name", default=f"tollgate-otlp-{library}")
    parser.add_argument(
        "--capture", metavar="FILE", help="write the spans to FILE as an OTLP/JSON export request instead of exporting"
    )
    args = parser.parse_args()
    if not args.capture and not args.endpoint:
        parser.error("--endpoint is required unless --capture is given")
    return args


def span_exporter(args):
    """The exporter the library gets: to tollgate ingest, or to a file."""
    if args.capture:
        return CheckedExporter(CaptureExporter(args.capture))
    headers = {"authorization": f"Bearer {args.ingest_key}"}
    if args.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        inner = OTLPSpanExporter(endpoint=args.endpoint, insecure=True, headers=headers, timeout=10)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = args.endpoint.rstrip("/") + "/v1/traces"
        inner = OTLPSpanExporter(endpoint=url, headers=headers, timeout=10)
    return CheckedExporter(inner)


class CheckedExporter(SpanExporter):
    """Counts what the wrapped exporter delivered and what it failed, so the
    program can tell the test (the SDK's processors only log a failure)."""

    def __init__(self, inner):
        self.inner = inner
        self.exported = 0
        self.failed = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


class CaptureExporter(SpanExporter):
    """Keeps the spans and writes them, at shutdown, as the OTLP/JSON body
    of one `POST /v1/traces` (ids in hex, enums as numbers, per the OTLP
    spec's JSON encoding)."""

    def __init__(self, path):
        self.path = path
        self.spans = []

    def export(self, spans):
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        body = MessageToDict(encode_spans(self.spans), use_integers_for_enums=True)
        with open(self.path, "w") as f:
            json.dump(_ids_in_hex(body), f, indent=2, sort_keys=True)
            f.write("\n")

    def force_flush(self, timeout_millis=30000):
        return True


def _ids_in_hex(value):
    """protobuf's JSON mapping writes bytes in base64; OTLP/JSON wants the
    trace and span ids in hex."""
    import base64

    if isinstance(value, dict):
        return {
            k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _ids_in_hex(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_ids_in_hex(v) for v in value]
    return value


class SpanRecorder(SpanProcessor):
    """Every span that ended in this process, for the report."""

    def __init__(self):
        self.spans = []

    def on_end(self, span):
        ctx = span.get_span_context()
        self.spans.append(
            {
                "name": span.name,
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent_span_id": format(span.parent.span_id, "016x") if span.parent else "",
                "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
            }
        )


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def chat(client, args):
    """The call itself; returns what the mock reported: model and usage, or
    with --mock-error-shape the SDK's exception (class and status)."""
    request = {
        "model": args.model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": args.max_tokens,
    }
    if args.mock_error_shape:
        import openai

        try:
            client.with_options(max_retries=0).chat.completions.create(
                extra_headers={"x-mock-error-shape": args.mock_error_shape}, **request
            )
        except openai.APIStatusError as error:
            return {"error": {"class": type(error).__name__, "status": error.status_code, "message": str(error)}}
        raise SystemExit(f"the mock answered {args.mock_error_shape} with a success")
    if not args.stream:
        response = client.chat.completions.create(**request)
        return {"model": response.model, "usage": _usage(response.usage), "text": response.choices[0].message.content}
    model, usage, text = None, None, []
    stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **request)
    for chunk in stream:
        model = chunk.model or model
        if chunk.usage is not None:
            usage = _usage(chunk.usage)
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
    return {"model": model, "usage": usage, "text": "".join(text)}


def _usage(usage):
    if usage is None:
        return None
    details = getattr(usage, "prompt_tokens_details", None)
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cached_input_tokens": getattr(details, "cached_tokens", 0) or 0,
    }


def run(library, args, exporter, client):
    """Make the call under the global tracer provider the library set up,
    flush, print the report; exit 1 when the export failed."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    provider = trace.get_tracer_provider()
    recorder = SpanRecorder()
    provider.add_span_processor(recorder)
    tracer = trace.get_tracer("tollgate.otlp_clients")
    started = time.monotonic()
    with tracer.start_as_current_span("otlp-client-call") as parent:
        trace_id = format(parent.get_span_context().trace_id, "032x")
        parent_span_id = format(parent.get_span_context().span_id, "016x")
        reply = chat(client, args)
    elapsed_ms = round((time.monotonic() - started) * 1000)
    provider.force_flush()
    provider.shutdown()
    report = {
        "library": library,
        "protocol": None if args.capture else args.protocol,
        "stream": args.stream,
        "trace_id": trace_id,
        "parent_span_id": parent_span_id,
        "elapsed_ms": elapsed_ms,
        "reply": reply,
        "spans": recorder.spans,
        "exported_spans": exporter.exported,
        "failed_spans": exporter.failed,
    }
    print(json.dumps(report, sort_keys=True))
    if exporter.failed or exporter.exported == 0:
        print(
            f"{library}: the OTLP export to {args.endpoint} ({args.protocol}) failed for "
            f"{exporter.failed} of {exporter.failed + exporter.exported} spans (the exporter's reason is logged above)",
            file=sys.stderr,
        )
        sys.exit(1)
