"""One openai chat call instrumented by OpenTelemetry's own
`opentelemetry-instrumentation-openai-v2`, exported as OTLP to tollgate
ingest (or captured to a file): see instrumented_call.py for the arguments
and the report.

It runs in two venvs: the current release (2.4b0, on
opentelemetry-util-genai 1.1b0) writes the current attribute names
(`gen_ai.provider.name`) whether or not
OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental is set (that
setting changes none of the attributes on the span); an older one (2.1b0,
venv `openai-v2-legacy`) writes those up to semconv 1.36 (`gen_ai.system`).
"""

import instrumented_call
from openai import OpenAI
from opentelemetry import trace
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

LIBRARY = "opentelemetry-instrumentation-openai-v2"


def main():
    args = instrumented_call.parse_args(LIBRARY)
    exporter = instrumented_call.span_exporter(args)
    provider = TracerProvider(
        resource=Resource.create({"service.name": args.service_name, "deployment.environment.name": "test"})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    client = OpenAI(base_url=args.mock_url, api_key=args.api_key)
    instrumented_call.run(LIBRARY, args, exporter, client)


if __name__ == "__main__":
    main()
