#!/usr/bin/env python3
"""A minimal HTTPS (CONNECT) proxy for tests/auth.rs: usage connect_proxy.py STATE_DIR.

Listens on a free loopback port (written to STATE_DIR/proxy_port), logs each CONNECT target to
STATE_DIR/proxy.log, and tunnels the bytes both ways.
"""
import os
import socket
import sys
import threading

STATE = sys.argv[1]


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(client):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = client.recv(4096)
        if not chunk:
            client.close()
            return
        head += chunk
    line = head.split(b"\r\n", 1)[0].decode()
    method, target, _ = line.split(" ", 2)
    with open(os.path.join(STATE, "proxy.log"), "a") as f:
        f.write(f"{method} {target}\n")
    if method != "CONNECT":
        client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        client.close()
        return
    host, port = target.rsplit(":", 1)
    upstream = socket.create_connection((host, int(port)))
    client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    pipe(upstream, client)


server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(64)
with open(os.path.join(STATE, "proxy_port.tmp"), "w") as f:
    f.write(str(server.getsockname()[1]))
os.rename(os.path.join(STATE, "proxy_port.tmp"), os.path.join(STATE, "proxy_port"))
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
