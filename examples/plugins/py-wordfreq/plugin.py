#!/usr/bin/env python3
"""py-wordfreq: a plugbay process plugin written in Python.

It implements the process-plugin protocol, version 1 (docs/process-protocol.md) with
nothing but grpcio, grpcio-health-checking and the stubs that grpcio-tools generates from
proto/plugbay/plugin/v1/plugin.proto, to show that the contract does not depend on Rust.

It provides the capability ``text.stats@1``:

* ``word-frequencies``: a JSON string -> a JSON object of its 10 most frequent words
  (lowercased) and their counts, by count descending, then by word;
* ``char-count``: a JSON string -> ``{"chars": N}``, N being the number of Unicode code
  points.

The stubs are not checked in: ``cargo xtask plugins`` (or the test kit) generates them into
``gen/`` next to this file.
"""

import json
import os
import re
import signal
import sys
import threading
from collections import Counter
from concurrent import futures

PLUGIN_ID = "py-wordfreq"
PLUGIN_VERSION = "0.1.0"
CAPABILITY = "text.stats@1"

# The value the host puts in PLUGBAY_PLUGIN_COOKIE: it says "plugbay started me".
COOKIE = "d6f2c0a4-plugbay-process-plugin"
# The protocol versions this program speaks.
SUPPORTED_VERSIONS = {1}
# Requests may be as large as the host's payload limit (16 MiB by default); gRPC's own
# default limit is 4 MiB, so raise it above the host's.
MAX_MESSAGE_BYTES = 17 * 1024 * 1024
# The service whose health the host polls before it calls Describe.
HEALTH_SERVICE = "plugbay.plugin.v1.PluginService"
# The longest a HostService.Log call may take, in seconds.
LOG_TIMEOUT_S = 5.0
# How many words `word-frequencies` returns.
TOP_WORDS = 10
# A word: letters and digits (any script), with inner apostrophes ("don't", "o'clock").
WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


def fail(message):
    """Explains on stderr (the host logs it) and exits with status 1."""
    sys.stderr.write(f"{PLUGIN_ID}: {message}\n")
    sys.stderr.flush()
    sys.exit(1)


def exit_unless_started_by_host():
    """A person who runs this file by hand gets an explanation instead of a hang."""
    if os.environ.get("PLUGBAY_PLUGIN_COOKIE") != COOKIE:
        fail(
            "this is a plugbay plugin (a process plugin): it is not meant to be run by hand. "
            "Put its folder (plugin.toml, plugin.py, gen/) in a plugins folder and let the "
            "host start it, e.g. `plugbay call text.stats@1 char-count '\"hi\"' --plugins "
            "target/plugins`. The protocol is docs/process-protocol.md."
        )


# The cookie is checked before grpc is imported, so that the explanation above does not
# depend on grpc being installed.
if __name__ == "__main__":
    exit_unless_started_by_host()

# The generated stubs live in gen/ beside this file (plugbay/plugin/v1/plugin_pb2*.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
try:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from plugbay.plugin.v1 import plugin_pb2 as pb
    from plugbay.plugin.v1 import plugin_pb2_grpc as rpc
except ImportError as error:
    fail(
        f"cannot import {error.name or error}: this plugin needs grpcio and "
        "grpcio-health-checking (`python3 -m pip install grpcio grpcio-tools "
        "grpcio-health-checking`) and the stubs in gen/ that `cargo xtask plugins` "
        "generates with grpc_tools.protoc"
    )


# ---- the methods ------------------------------------------------------------------------


class BadRequest(Exception):
    """A request the plugin refuses: becomes gRPC INVALID_ARGUMENT."""


def text_of(payload):
    """The request payload, which must be a JSON string."""
    try:
        value = json.loads(payload)
    except ValueError as error:  # also covers bytes that are not UTF-8
        raise BadRequest(f"the request is not JSON: {error}") from None
    if not isinstance(value, str):
        raise BadRequest(f"the request must be a JSON string, not {type(value).__name__}")
    return value


def word_frequencies(text):
    """The TOP_WORDS most frequent lowercase words, by count descending, then by word."""
    counts = Counter(word.lower() for word in WORD.findall(text))
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_WORDS]
    return dict(top)  # dicts keep insertion order, and so does json.dumps


def char_count(text):
    """The number of characters (Unicode code points)."""
    return {"chars": len(text)}


# Method name -> function from the request text to a JSON-serialisable answer.
METHODS = {
    "word-frequencies": word_frequencies,
    "char-count": char_count,
}


# ---- the gRPC services ------------------------------------------------------------------


class WordFreqPlugin(rpc.PluginServiceServicer):
    """plugbay.plugin.v1.PluginService. Calls run concurrently on the server's threads;
    the methods keep no state, so they need no lock."""

    def __init__(self, host_socket, stopping):
        self.host_socket = host_socket
        self.stopping = stopping
        self.host_channel = None

    def Describe(self, request, context):
        # Must match plugin.toml: the host compares id, version and provides.
        return pb.DescribeResponse(
            id=PLUGIN_ID,
            version=PLUGIN_VERSION,
            provides={CAPABILITY: pb.MethodList(methods=list(METHODS))},
        )

    def Init(self, request, context):
        # HostService is served on PLUGBAY_HOST_SOCKET; it is already listening. grpcio
        # (1.57 and later) sends the %-encoded socket path as the :authority of a unix:
        # channel, which the host's HTTP/2 server refuses as malformed (the call fails with
        # INTERNAL, "RST_STREAM with error code 1"): say "localhost", as grpc-go does.
        self.host_channel = grpc.insecure_channel(
            "unix:" + self.host_socket, options=[("grpc.default_authority", "localhost")]
        )
        host = rpc.HostServiceStub(self.host_channel)
        python = sys.version.split()[0]
        message = f"{PLUGIN_ID} {PLUGIN_VERSION} ready: Python {python}, pid {os.getpid()}"
        # No longer than what remains of Init's deadline, if it has one (grpcio says a
        # huge number of seconds when there is none).
        timeout = min(context.time_remaining() or LOG_TIMEOUT_S, LOG_TIMEOUT_S)
        try:
            line = pb.LogRequest(level=pb.LogRequest.LEVEL_INFO, message=message)
            host.Log(line, timeout=timeout)
        except grpc.RpcError as error:
            # A lost log line is no reason to fail the start; say it on stderr instead.
            failure = f"{error.code().name}: {error.details()}"
            sys.stderr.write(f"{message} (HostService.Log failed: {failure})\n")
            sys.stderr.flush()
        return pb.InitResponse()

    def Call(self, request, context):
        method = METHODS.get(request.method)
        if method is None:
            # The host only sends methods plugin.toml lists, so this means the two disagree.
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"{CAPABILITY} has no method {request.method!r}"
            )
        try:
            answer = method(text_of(request.payload))
        except BadRequest as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        payload = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
        return pb.CallResponse(payload=payload, content_type="application/json")

    def OnEvent(self, request, context):
        # plugin.toml subscribes to no topic, so no event arrives.
        return pb.EventResponse()

    def Shutdown(self, request, context):
        # Answer first; the main thread then stops the server and exits.
        self.stopping.set()
        return pb.ShutdownResponse()

    def close(self):
        if self.host_channel is not None:
            self.host_channel.close()


# ---- the protocol -----------------------------------------------------------------------


def choose_version():
    """The highest protocol version both the host and this program speak."""
    offered_text = os.environ.get("PLUGBAY_PROTOCOL_VERSIONS", "")
    try:
        offered = {int(version) for version in offered_text.split(",")}
    except ValueError:
        fail(f"PLUGBAY_PROTOCOL_VERSIONS={offered_text!r} is not a list of versions")
    common = offered & SUPPORTED_VERSIONS
    if not common:
        fail(
            f"the host speaks protocol versions {sorted(offered)}, "
            f"this plugin {sorted(SUPPORTED_VERSIONS)}"
        )
    return max(common)


def required_env(name):
    value = os.environ.get(name)
    if not value:
        fail(f"{name} is not set; the host sets it when it starts a plugin")
    return value


def main():
    version = choose_version()
    socket_path = required_env("PLUGBAY_SOCKET")
    host_socket = required_env("PLUGBAY_HOST_SOCKET")

    # Shutdown sets `stopping`; so do SIGTERM and Ctrl-C, for a clean exit either way.
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    plugin = WordFreqPlugin(host_socket, stopping)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    rpc.add_PluginServiceServicer_to_server(plugin, server)
    health_status = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_status, server)
    try:
        server.add_insecure_port("unix:" + socket_path)
    except RuntimeError as error:  # grpcio raises when it cannot bind
        fail(f"cannot listen on {socket_path}: {error}")
    server.start()
    health_status.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    # The handshake: exactly one line, the first thing on stdout. Every later line on
    # stdout or stderr becomes a host log line.
    sys.stdout.write(f"plugbay|{version}|unix|{socket_path}|grpc\n")
    sys.stdout.flush()

    stopping.wait()

    # The grace lets the Shutdown answer (and any call in flight) reach the host.
    health_status.enter_graceful_shutdown()
    server.stop(grace=1).wait()
    plugin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
