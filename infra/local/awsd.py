"""The local AWS-compatible server for DynamoDB (+ Streams) and SQS: moto's server app,
bound to loopback, with one change that matters for correctness.

Real DynamoDB applies each conditional write and transaction atomically. moto's
in-memory backend does not: under concurrent requests two conditional updates can both
pass their condition (measured: 301 admissions against a limit of 300). Rate limiting,
agent reservation and idempotency all rely on that atomicity, so every DynamoDB request
is serialized here. SQS and S3 requests are not held by the lock, so a long-polling
consumer never stalls the store.
"""

import argparse
import os
import signal
import sys
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


class SerializedDynamoDB:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            with self.lock:
                # Materialise the body inside the lock: the backend runs while iterating.
                body = list(self.app(environ, start_response))
            return body
        return self.app(environ, start_response)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("awsd binds loopback only")
    # moto builds SQS queue URLs from MOTO_PORT.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        SerializedDynamoDB(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
