"""An HTTP/1.0 server on plain sockets that moves its bytes in unusual ways, for end-to-end tests.

Every request is first peeked at (MSG_PEEK, as protocol-sniffing servers do) and then read.
GET /peek answers with send(). GET /splice answers through a pipe spliced into the socket, a
syscall the agent does not decode: it can only count those bytes. GET /until-close answers
without a length: the body ends when the server closes the connection.

    python3 odd_io_server.py PORT
"""
import os
import socket
import sys


def answer(conn, path):
    body = f"{path}\n".encode()
    response = (
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    if path == "/until-close":
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body)
    elif path == "/splice":
        read_end, write_end = os.pipe()
        os.write(write_end, response)
        os.close(write_end)
        left = len(response)
        while left:
            left -= os.splice(read_end, conn.fileno(), left)
        os.close(read_end)
    else:
        conn.sendall(response)


def serve(conn):
    with conn:
        peeked = conn.recv(4096, socket.MSG_PEEK)
        if not peeked:
            return
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        path = request.split(b" ", 2)[1].decode()
        answer(conn, path)


def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(sys.argv[1])))
    listener.listen(16)
    while True:
        conn, _ = listener.accept()
        serve(conn)


if __name__ == "__main__":
    main()
