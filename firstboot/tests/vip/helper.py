#!/usr/bin/env python3
"""Test helpers for the VIP failover test (run inside network namespaces).

  helper.py server CERT KEY NAME PORT   TLS apiserver stand-in: GET answers
                                         200 with NAME (so /healthz works).
  helper.py client HOST PORT INTERVAL   requests https://HOST:PORT/healthz in
                                         a loop, one new connection each, and
                                         prints "START_MS END_MS ok NAME" or
                                         "START_MS END_MS fail REASON"
                                         (CLOCK_MONOTONIC milliseconds). Connect
                                         timeout 0.5 s, reply timeout 3 s.
"""
import http.server
import socket
import ssl
import sys
import time


def server(cert, key, name, port):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("0.0.0.0", int(port)), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


def client(host, port, interval):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    while True:
        start = time.monotonic()
        try:
            with socket.create_connection((host, int(port)), timeout=0.5) as raw:
                raw.settimeout(3.0)  # haproxy may redispatch after its 1 s connect timeout
                with ctx.wrap_socket(raw) as s:
                    s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                    data = b""
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if b" 200 " in head.split(b"\r\n")[0]:
                res = "ok " + body.decode(errors="replace").strip()
            else:
                res = "fail status"
        except Exception as e:  # every failure counts, whatever it is
            res = "fail " + type(e).__name__
        end = time.monotonic()
        print(f"{int(start * 1000)} {int(end * 1000)} {res}", flush=True)
        time.sleep(max(0.0, float(interval) - (end - start)))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(*sys.argv[2:6])
    else:
        client(*sys.argv[2:5])
