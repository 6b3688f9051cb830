"""An OTLP/HTTP metrics receiver for the tests, decoding with the OpenTelemetry project's
own protobuf definitions (PyPI's opentelemetry-proto).

Every data point received is appended to --out as one JSON line, with its resource's
attributes, its metric's name, kind, description and temporality, its attributes, time
and value. Requests that are not binary OTLP (wrong path, content type or encoding, a
body that does not decode) get 400 and are recorded nowhere. --reject-first N answers
the first request with a partial success rejecting N data points. --count-only decodes
and answers but records nothing (for benchmarks). --tls-cert/--tls-key serve HTTPS,
requiring a client certificate from --tls-client-ca. Prints "listening"
once bound; on SIGTERM it finishes the request in hand (so that no request is recorded
without its answer) and stops.
"""

import argparse
import gzip
import http.server
import json
import signal
import ssl
import threading

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2


def attributes(pairs):
    return {kv.key: kv.value.string_value for kv in pairs}


def points(request):
    for rm in request.resource_metrics:
        resource = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind)
                for p in data.data_points:
                    yield {
                        "resource": resource,
                        "scope": sm.scope.name,
                        "name": metric.name,
                        "kind": kind,
                        "description": metric.description,
                        "temporality": getattr(data, "aggregation_temporality", 0),
                        "monotonic": getattr(data, "is_monotonic", False),
                        "attributes": attributes(p.attributes),
                        "time_unix_nano": p.time_unix_nano,
                        "value": p.as_double,
                    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--out", required=True)
    parser.add_argument("--reject-first", type=int, default=0)
    parser.add_argument("--count-only", action="store_true")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--tls-client-ca")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    out = open(args.out, "a", encoding="utf-8")
    state = {"requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/metrics":
                return self.refuse(f"no such path {self.path}")
            if self.headers.get("Content-Type") != "application/x-protobuf":
                return self.refuse("not binary protobuf")
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = metrics_service_pb2.ExportMetricsServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception as e:  # a body that does not decode
                return self.refuse(f"undecodable: {e}")
            if not args.count_only:
                for p in points(request):
                    out.write(json.dumps(p) + "\n")
                out.flush()
            response = metrics_service_pb2.ExportMetricsServiceResponse()
            state["requests"] += 1
            if state["requests"] == 1 and args.reject_first:
                response.partial_success.rejected_data_points = args.reject_first
                response.partial_success.error_message = "rejected for the test"
            payload = response.SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def refuse(self, why):
            payload = why.encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_):
            pass

    server = http.server.HTTPServer((host, int(port)), Handler)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        context.load_verify_locations(args.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
    # shutdown() waits for serve_forever() to finish its request, so it runs beside it.
    signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start()
    )
    print("listening", flush=True)
    server.serve_forever()
    server.server_close()
    out.close()


if __name__ == "__main__":
    main()
