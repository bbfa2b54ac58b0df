"""One openai chat call instrumented by OpenLLMetry (`traceloop-sdk`),
exported as OTLP to tollgate ingest (or captured to a file): see
instrumented_call.py for the arguments and the report.

`Traceloop.init(exporter=...)` takes the exporter of instrumented_call (so
the export is checked); its metrics (which would go to Traceloop's cloud)
and its own usage telemetry are off, and it instruments only openai.
"""

import os

# Read by the SDK when it starts: no metrics exporter to Traceloop's cloud.
os.environ.setdefault("TRACELOOP_METRICS_ENABLED", "false")

import instrumented_call  # noqa: E402
from openai import OpenAI  # noqa: E402
from traceloop.sdk import Traceloop  # noqa: E402
from traceloop.sdk.instruments import Instruments  # noqa: E402

LIBRARY = "traceloop-sdk"


def main():
    args = instrumented_call.parse_args(LIBRARY)
    exporter = instrumented_call.span_exporter(args)
    Traceloop.init(
        app_name=args.service_name,
        exporter=exporter,
        telemetry_enabled=False,
        instruments={Instruments.OPENAI},
        resource_attributes={"deployment.environment": "test"},
    )
    client = OpenAI(base_url=args.mock_url, api_key=args.api_key)
    instrumented_call.run(LIBRARY, args, exporter, client)


if __name__ == "__main__":
    main()
