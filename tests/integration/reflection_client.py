#!/usr/bin/python3
"""A control-plane client that needs no .proto file: everything it knows about
marchproxy.ModuleService comes from the server's reflection service (grpc.reflection.v1alpha),
as with grpcurl. Uses only Debian packages (python3-grpcio, python3-grpc-tools); run it with
/usr/bin/python3, which has them.

  reflection_client.py HOST:PORT list
  reflection_client.py HOST:PORT describe SYMBOL          e.g. marchproxy.ModuleService
  reflection_client.py HOST:PORT call METHOD [JSON]       e.g. marchproxy.ModuleService/GetStatus
  reflection_client.py HOST:PORT keepalive [--idle S] [--ping-ms MS]

Options: --token T (default $AILB_CONTROL_TOKEN) sends `authorization: Bearer T`;
--timeout S per call. Prints one JSON object on stdout. Exit status: 0 OK, 3 the RPC failed
(its code, message and marchproxy.Error are in the JSON), 1 keepalive saw a GOAWAY, 2 usage or
client error.

`keepalive` checks the transport the MarchProxy NLB relies on: a channel that pings every
--ping-ms with no call in flight stays idle --idle seconds, then calls grpc.health.v1 Check on
the same channel. A server that refuses such pings sends GOAWAY (too_many_pings) and the channel
leaves READY; the JSON reports the states seen.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

# The C-core reads this at start-up. An idle client reads the server's ping acks only when
# something polls its socket; without a short backup poll the ack can sit unread past the
# keepalive timeout and the client drops the channel itself (see docs/control-plane.md).
os.environ.setdefault("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "200")

import grpc  # noqa: E402
from google.protobuf import descriptor_pb2  # noqa: E402
from google.protobuf import descriptor_pool  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from google.protobuf import message_factory  # noqa: E402

REFLECTION_PROTO = "/usr/share/grpc-proto/grpc/reflection/v1alpha/reflection.proto"


class ClientError(Exception):
    pass


def load_reflection_stubs(workdir):
    """Generates the reflection stubs with grpc_tools.protoc and imports them.

    The proto is copied under another name first: generating it in place would create a
    top-level package named grpc/ that shadows the grpc library.
    """
    proto_dir = os.path.join(workdir, "proto")
    out_dir = os.path.join(workdir, "gen")
    os.makedirs(proto_dir)
    os.makedirs(out_dir)
    shutil.copy(REFLECTION_PROTO, os.path.join(proto_dir, "ailb_reflection_v1alpha.proto"))
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I" + proto_dir,
         "--python_out=" + out_dir, "--grpc_python_out=" + out_dir,
         os.path.join(proto_dir, "ailb_reflection_v1alpha.proto")],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClientError("grpc_tools.protoc failed: " + result.stderr.strip())
    sys.path.insert(0, out_dir)
    import ailb_reflection_v1alpha_pb2 as pb2  # pylint: disable=import-outside-toplevel
    import ailb_reflection_v1alpha_pb2_grpc as pb2_grpc  # pylint: disable=import-outside-toplevel
    return pb2, pb2_grpc


class Reflection:
    """Asks the server's reflection service and builds message classes from the answers."""

    def __init__(self, channel, stubs, timeout):
        self._pb2, pb2_grpc = stubs
        self._stub = pb2_grpc.ServerReflectionStub(channel)
        self._timeout = timeout
        self._files = {}  # name -> FileDescriptorProto
        self.pool = descriptor_pool.DescriptorPool()
        self._added = set()

    def _ask(self, **kwargs):
        request = self._pb2.ServerReflectionRequest(**kwargs)
        responses = self._stub.ServerReflectionInfo(iter([request]), timeout=self._timeout)
        for response in responses:
            if response.HasField("error_response"):
                raise ClientError("reflection: %s (%d)" % (
                    response.error_response.error_message, response.error_response.error_code))
            return response
        raise ClientError("reflection: no answer")

    def list_services(self):
        response = self._ask(list_services="")
        return sorted(s.name for s in response.list_services_response.service)

    def _take_files(self, response):
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            self._files.setdefault(proto.name, proto)

    def _add_file(self, name):
        """Adds a file to the pool after its dependencies, fetching any the server left out."""
        if name in self._added:
            return
        if name not in self._files:
            self._take_files(self._ask(file_by_filename=name))
        proto = self._files[name]
        for dependency in proto.dependency:
            self._add_file(dependency)
        self.pool.Add(proto)
        self._added.add(name)

    def load_symbol(self, symbol):
        """Fetches the file defining `symbol` (and its dependencies); returns the file name."""
        response = self._ask(file_containing_symbol=symbol)
        self._take_files(response)
        first = descriptor_pb2.FileDescriptorProto.FromString(
            response.file_descriptor_response.file_descriptor_proto[0])
        self._add_file(first.name)
        return first.name

    def message_class(self, descriptor):
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(descriptor)
        return message_factory.MessageFactory(self.pool).GetPrototype(descriptor)

    def message_class_by_name(self, full_name):
        return self.message_class(self.pool.FindMessageTypeByName(full_name))


def read_varint(data, pos):
    result, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse_fields(data):
    """The (number, value) pairs of a serialized message: ints for varints, bytes otherwise."""
    fields, pos = [], 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = read_varint(data, pos)
        elif wire_type == 2:
            length, pos = read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire_type == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ClientError("unsupported wire type %d" % wire_type)
        fields.append((number, value))
    return fields


def status_details(error, reflection):
    """Decodes grpc-status-details-bin (google.rpc.Status) into the packed messages, as dicts.

    Debian ships no google/rpc/status.proto, and the layout is three fields; the packed
    google.protobuf.Any values are resolved through reflection (marchproxy.Error).
    """
    details = []
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        for number, any_bytes in parse_fields(value):
            if number != 3:
                continue
            any_fields = dict(parse_fields(any_bytes))
            type_url = any_fields.get(1, b"").decode()
            type_name = type_url.rsplit("/", 1)[-1]
            try:
                cls = reflection.message_class_by_name(type_name)
                message = cls.FromString(any_fields.get(2, b""))
                details.append({"@type": type_url, **json_format.MessageToDict(
                    message, preserving_proto_field_name=True)})
            except KeyError:
                details.append({"@type": type_url})
    return details


def metadata_for(token):
    return (("authorization", "Bearer " + token),) if token else ()


def cmd_list(channel, stubs, args):
    reflection = Reflection(channel, stubs, args.timeout)
    return 0, {"services": reflection.list_services()}


def cmd_describe(channel, stubs, args):
    reflection = Reflection(channel, stubs, args.timeout)
    file_name = reflection.load_symbol(args.symbol)
    out = {"symbol": args.symbol, "file": file_name}
    try:
        service = reflection.pool.FindServiceByName(args.symbol)
        out["methods"] = [{
            "name": m.name,
            "input": m.input_type.full_name,
            "output": m.output_type.full_name,
            "server_streaming": bool(getattr(m, "server_streaming", False)),
        } for m in service.methods]
    except KeyError:
        message = reflection.pool.FindMessageTypeByName(args.symbol)
        out["fields"] = [{"number": f.number, "name": f.name} for f in message.fields]
    return 0, out


def cmd_call(channel, stubs, args):
    if "/" not in args.method:
        raise ClientError("METHOD is <service>/<rpc>, e.g. marchproxy.ModuleService/GetStatus")
    service_name, method_name = args.method.split("/", 1)
    reflection = Reflection(channel, stubs, args.timeout)
    reflection.load_symbol(service_name)
    service = reflection.pool.FindServiceByName(service_name)
    method = service.methods_by_name.get(method_name)
    if method is None:
        raise ClientError("%s has no method %s" % (service_name, method_name))
    request_cls = reflection.message_class(method.input_type)
    response_cls = reflection.message_class(method.output_type)
    request = json_format.Parse(args.json or "{}", request_cls())
    path = "/%s/%s" % (service_name, method_name)
    out = {"method": args.method}
    try:
        if getattr(method, "server_streaming", False):
            call = channel.unary_stream(path, request_serializer=request_cls.SerializeToString,
                                        response_deserializer=response_cls.FromString)
            responses = call(request, timeout=args.timeout, metadata=metadata_for(args.token))
            out["responses"] = []
            for response in responses:
                out["responses"].append(json_format.MessageToDict(
                    response, preserving_proto_field_name=True))
                if len(out["responses"]) >= args.max_messages:
                    responses.cancel()
                    break
        else:
            call = channel.unary_unary(path, request_serializer=request_cls.SerializeToString,
                                       response_deserializer=response_cls.FromString)
            response = call(request, timeout=args.timeout, metadata=metadata_for(args.token))
            out["response"] = json_format.MessageToDict(
                response, preserving_proto_field_name=True, including_default_value_fields=True)
        out["code"] = "OK"
        return 0, out
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.CANCELLED and out.get("responses"):
            out["code"] = "OK"
            return 0, out
        out["code"] = error.code().name
        out["message"] = error.details()
        out["details"] = status_details(error, reflection)
        return 3, out


def cmd_keepalive(target, args):
    """Idles on a pinging channel, then calls on it; reports whether the server sent GOAWAY."""
    options = [
        ("grpc.keepalive_time_ms", args.ping_ms),
        ("grpc.keepalive_timeout_ms", 10000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    channel = grpc.insecure_channel(target, options=options)
    states = []
    lock = threading.Lock()
    started = time.monotonic()

    def on_state(state):
        with lock:
            states.append((time.monotonic() - started, state.name))

    channel.subscribe(on_state, try_to_connect=True)
    # grpc.health.v1.Health/Check with an empty request (service "") as raw bytes: no stubs.
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=lambda raw: raw,
                                response_deserializer=lambda raw: raw)
    out = {"target": target, "ping_ms": args.ping_ms, "idle_seconds": args.idle}
    try:
        check(b"", timeout=args.timeout, wait_for_ready=True)
        out["first_call"] = "OK"
    except grpc.RpcError as error:
        out["first_call"] = error.code().name
    idle_from = time.monotonic() - started
    time.sleep(args.idle)
    try:
        # No wait_for_ready: the call must succeed on the connection as it is.
        check(b"", timeout=args.timeout)
        out["second_call"] = "OK"
    except grpc.RpcError as error:
        out["second_call"] = error.code().name
    time.sleep(0.2)  # let the last state callback land
    channel.unsubscribe(on_state)
    channel.close()
    with lock:
        out["states"] = [{"t": round(t, 2), "state": s} for t, s in states]
        out["idle_from"] = round(idle_from, 2)
        # Callbacks arrive in order but late (on their own thread), so judge the sequence, not
        # the times: once READY, a GOAWAY sends the channel to IDLE (or TRANSIENT_FAILURE)
        # before any reconnect; a healthy idle channel reports nothing more.
        names = [s for _, s in states]
        after_ready = names[names.index("READY") + 1:] if "READY" in names else names
        out["left_ready"] = "READY" not in names or any(s != "READY" for s in after_ready)
    out["goaway"] = out["left_ready"]
    ok = out["first_call"] == "OK" and out["second_call"] == "OK" and not out["goaway"]
    return (0 if ok else 1), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("target", help="HOST:PORT of the control server")
    parser.add_argument("--token", default=os.environ.get("AILB_CONTROL_TOKEN", ""))
    parser.add_argument("--timeout", type=float, default=10.0)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    describe = sub.add_parser("describe")
    describe.add_argument("symbol")
    call = sub.add_parser("call")
    call.add_argument("method")
    call.add_argument("json", nargs="?", default="{}")
    call.add_argument("--max-messages", type=int, default=2,
                      help="for a server stream: cancel after this many messages")
    keepalive = sub.add_parser("keepalive")
    keepalive.add_argument("--idle", type=float, default=12.0)
    keepalive.add_argument("--ping-ms", type=int, default=1000)
    args = parser.parse_args()

    try:
        if args.command == "keepalive":
            code, out = cmd_keepalive(args.target, args)
        else:
            with tempfile.TemporaryDirectory(prefix="ailb-reflection-") as workdir:
                stubs = load_reflection_stubs(workdir)
                with grpc.insecure_channel(args.target) as channel:
                    handler = {"list": cmd_list, "describe": cmd_describe, "call": cmd_call}
                    code, out = handler[args.command](channel, stubs, args)
    except (ClientError, grpc.RpcError, json_format.ParseError) as error:
        print(json.dumps({"error": str(error)}))
        return 2
    print(json.dumps(out, indent=2, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())
