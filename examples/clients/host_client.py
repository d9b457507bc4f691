#!/usr/bin/env python3
"""A client of the plugbay daemon's gRPC API in Python, with grpcio and stubs generated from
proto/plugbay/host/v1/host.proto at start-up (grpc_tools, into a temporary folder).

    host_client.py HOST:PORT list
    host_client.py HOST:PORT call TARGET METHOD JSON

Prints JSON on stdout; on a gRPC error prints `error: CODE: message` on stderr, exit 1.
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def load_stubs():
    out = tempfile.mkdtemp(prefix="plugbay-stubs-")
    status = protoc.main([
        "protoc", "-I", PROTO_ROOT, f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(PROTO_ROOT, "plugbay/host/v1/host.proto"),
    ])
    if status != 0:
        sys.exit(f"error: protoc failed on host.proto ({status})")
    sys.path.insert(0, out)
    from plugbay.host.v1 import host_pb2, host_pb2_grpc  # noqa: E402 (generated just now)
    return host_pb2, host_pb2_grpc


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    pb, rpc = load_stubs()
    with grpc.insecure_channel(argv[1]) as channel:
        stub = rpc.HostApiStub(channel)
        try:
            if argv[2] == "list":
                plugins = stub.ListPlugins(pb.ListPluginsRequest(), timeout=10).plugins
                print(json.dumps([{"id": p.id, "state": p.state, "capabilities": list(p.capabilities)} for p in plugins]))
            elif argv[2] == "call" and len(argv) == 6:
                request = pb.InvokeRequest(target=argv[3], method=argv[4], payload=argv[5].encode(),
                                           content_type="application/json")
                reply = stub.Invoke(request, timeout=10)
                print(json.dumps({"content_type": reply.content_type, "payload": json.loads(reply.payload)}))
            else:
                sys.exit(__doc__)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
