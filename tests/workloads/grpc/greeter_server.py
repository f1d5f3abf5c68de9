"""The greeter server (greeter.proto) over an insecure channel (h2c).

Generate the code first, into a directory on PYTHONPATH:
    python3 -m grpc_tools.protoc -I tests/workloads/grpc --python_out=OUT \
        --grpc_python_out=OUT tests/workloads/grpc/greeter.proto
Then: PYTHONPATH=OUT python3 tests/workloads/grpc/greeter_server.py [--port 50051]
Prints "listening on PORT" once it serves; stops on SIGTERM/SIGINT.
"""
import argparse
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

import greeter_pb2
import greeter_pb2_grpc


class Greeter(greeter_pb2_grpc.GreeterServicer):
    def SayHello(self, request, context):
        if request.name in ("", "nobody"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no such name: {request.name!r}")
        if request.name == "invalid":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "names must not be 'invalid' ✗ 100%")
        return greeter_pb2.HelloReply(message=f"Hello, {request.name}!")

    def SayHelloStream(self, request, context):
        for i in range(max(request.count, 0)):
            yield greeter_pb2.HelloReply(message=f"Hello #{i}, {request.name}!")

    def SaySlowly(self, request, context):
        time.sleep(request.delay_ms / 1000)
        return greeter_pb2.HelloReply(message=f"Hello, eventually, {request.name}!")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    print(f"listening on {port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
