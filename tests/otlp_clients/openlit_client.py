"""One openai chat call instrumented by OpenLIT (`openlit`), exported as
OTLP to tollgate ingest (or captured to a file): see instrumented_call.py
for the arguments and the report.

OpenLIT reuses a tracer provider that is already set, so the program sets
one up with the exporter of instrumented_call (the same as `openlit.init(
otlp_endpoint=..., otlp_headers=...)` would, but with the export checked).
Its price list comes from openlit_pricing.json (gpt-4o-mini at OpenAI's
list price): by default OpenLIT downloads one, which a test must not
depend on; with it, OpenLIT reports `gen_ai.usage.cost` on each span.
Metrics and log events are off: the test is about traces.
"""

import os

import instrumented_call
import openlit
from openai import OpenAI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

LIBRARY = "openlit"
PRICING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openlit_pricing.json")


def main():
    args = instrumented_call.parse_args(LIBRARY)
    exporter = instrumented_call.span_exporter(args)
    provider = TracerProvider(resource=Resource.create({"service.name": args.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    openlit.init(
        service_name=args.service_name,
        environment="test",
        disable_metrics=True,
        disable_events=True,
        pricing_json=PRICING,
    )
    client = OpenAI(base_url=args.mock_url, api_key=args.api_key)
    instrumented_call.run(LIBRARY, args, exporter, client)


if __name__ == "__main__":
    main()
