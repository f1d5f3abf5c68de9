"""A small unmodified-stdlib HTTP service for end-to-end tests.

GET /slow?ms=N sleeps N milliseconds; GET /fail answers 500; GET /items/<id> answers JSON;
GET /blob?kb=N answers N KiB; anything else is 404. Keep-alive (HTTP/1.1) so that one connection carries many requests.
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["100"])[0])
            time.sleep(ms / 1000)
            self.reply(200, json.dumps({"slept_ms": ms}))
        elif url.path == "/fail":
            self.reply(500, json.dumps({"error": "boom"}))
        elif url.path == "/blob":
            kb = int(parse_qs(url.query).get("kb", ["1"])[0])
            self.reply(200, "b" * (kb * 1024))
        elif url.path.startswith("/items/"):
            self.reply(200, json.dumps({"id": url.path.rsplit("/", 1)[-1]}))
        else:
            self.reply(404, json.dumps({"error": "not found"}))

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.reply(201, json.dumps({"received": len(body)}))


if __name__ == "__main__":
    port = int(sys.argv[1])
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
