"""The greeter client (greeter.proto): one insecure channel (one HTTP/2 connection) making
  1. SayHello("world")              -> OK
  2. SayHello("nobody")             -> NOT_FOUND, message "no such name: 'nobody'"
  3. SayHello("invalid")            -> INVALID_ARGUMENT, a non-ASCII message
  4. SayHelloStream("stream", 5)    -> 5 replies, OK
  5. SaySlowly("late", 1000 ms) with a 200 ms deadline -> DEADLINE_EXCEEDED (the server
     answers with trailers only and resets the stream; skipped with --no-deadline)
  6. SayHelloStream("cancel", 1000), cancelled by the client after 2 replies (RST_STREAM
     CANCEL from the client)
  7. SayHello("again")              -> OK
sequentially, printing one line per call. Optional --traceparent sends that header with each.

Usage (after generating code as greeter_server.py says):
    PYTHONPATH=OUT python3 tests/workloads/grpc/greeter_client.py [--target 127.0.0.1:50051]
"""
import argparse
import sys

import grpc

import greeter_pb2
import greeter_pb2_grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--traceparent")
    parser.add_argument("--no-deadline", action="store_true")
    args = parser.parse_args()
    metadata = [("traceparent", args.traceparent)] if args.traceparent else None
    with grpc.insecure_channel(args.target) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)

        def unary(name):
            try:
                reply = stub.SayHello(greeter_pb2.HelloRequest(name=name), metadata=metadata)
                print(f"SayHello({name}): OK {reply.message}", flush=True)
            except grpc.RpcError as e:
                print(f"SayHello({name}): {e.code().name} {e.details()}", flush=True)

        unary("world")
        unary("nobody")
        unary("invalid")
        replies = stub.SayHelloStream(
            greeter_pb2.HelloRequest(name="stream", count=5), metadata=metadata
        )
        print(f"SayHelloStream: {len(list(replies))} replies", flush=True)
        if not args.no_deadline:
            try:
                stub.SaySlowly(
                    greeter_pb2.HelloRequest(name="late", delay_ms=1000),
                    timeout=0.2,
                    metadata=metadata,
                )
                print("SaySlowly: OK", flush=True)
            except grpc.RpcError as e:
                print(f"SaySlowly: {e.code().name}", flush=True)
        replies = stub.SayHelloStream(
            greeter_pb2.HelloRequest(name="cancel", count=1000), metadata=metadata
        )
        got = [next(replies).message, next(replies).message]
        replies.cancel()
        print(f"SayHelloStream(cancel): {len(got)} replies, then cancelled", flush=True)
        unary("again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
