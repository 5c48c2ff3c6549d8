#!/usr/bin/env python3
"""The counting service: answers every GET with the next number, as JSON.

It runs on a VM next to its Weft agent, which registers it (vm/counting.hcl)
and puts a sidecar in front of it; other services reach it only through the
mesh. Standard library only.
"""
import argparse
import itertools
import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counter = itertools.count(1)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"count": next(counter), "hostname": socket.gethostname()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9003)
    args = parser.parse_args()
    ThreadingHTTPServer((args.listen, args.port), Handler).serve_forever()
