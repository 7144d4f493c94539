#!/usr/bin/python3
"""ctest driver for the control plane seen from outside C++: starts control_test_server
(ControlServer over FakeModuleCore), runs reflection_client.py against it and checks the JSON.

  control_client_test.py --server PATH --mode reflection|keepalive

reflection: the services are listed and described through reflection alone (health included),
  SetTrafficWeight is called from JSON (success, INVALID_ARGUMENT and NOT_FOUND with the
  marchproxy.Error in the status details), and with a token set the call needs it while
  reflection stays open.
keepalive: a client pinging every second with no call in flight idles 12 s; the server must not
  send GOAWAY (too_many_pings), the channel must stay READY and the next call must succeed.
"""

import argparse
import json
import os
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "reflection_client.py")
FAILURES = []


def check(condition, what, context=None):
    if condition:
        print("ok   " + what)
    else:
        print("FAIL " + what)
        if context is not None:
            print(json.dumps(context, indent=2, sort_keys=True) if not isinstance(context, str)
                  else context)
        FAILURES.append(what)


class Server:
    """control_test_server as a child: its port from the first line, stopped by closing stdin."""

    def __init__(self, path, token=""):
        env = dict(os.environ)
        env.pop("AILB_CONTROL_TOKEN", None)
        args = [path, "--port=0", "--host=127.0.0.1"] + (["--token=" + token] if token else [])
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        line = [None]

        def read_first_line():
            line[0] = self.process.stdout.readline()

        reader = threading.Thread(target=read_first_line, daemon=True)
        reader.start()
        reader.join(timeout=20)
        if not line[0] or not line[0].startswith("port "):
            self.process.kill()
            raise SystemExit("control_test_server did not start: %r" % (line[0],))
        self.target = "127.0.0.1:" + line[0].split()[1]

    def stop(self):
        self.process.stdin.close()  # EOF on stdin stops the server
        try:
            self.process.wait(timeout=20)
            rest = self.process.stdout.read()
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            rest = ""
        check(self.process.returncode == 0 and "stopped" in rest,
              "control_test_server stops cleanly when stdin closes (exit %s)"
              % self.process.returncode)


def run_client(args, env_extra=None, timeout=60):
    env = dict(os.environ)
    env.pop("AILB_CONTROL_TOKEN", None)
    env.update(env_extra or {})
    result = subprocess.run([sys.executable, CLIENT] + args, capture_output=True, text=True,
                            env=env, timeout=timeout, check=False)
    try:
        out = json.loads(result.stdout)
    except json.JSONDecodeError:
        out = {"unparsed_stdout": result.stdout, "stderr": result.stderr[-4000:]}
    return result.returncode, out, result.stderr


def error_detail(out):
    for detail in out.get("details", []):
        if detail.get("@type", "").endswith("/marchproxy.Error"):
            return detail
    return {}


def test_reflection(server_path):
    server = Server(server_path)
    try:
        target = server.target
        code, out, _ = run_client([target, "list"])
        services = out.get("services", [])
        check(code == 0 and "marchproxy.ModuleService" in services
              and "grpc.health.v1.Health" in services
              and "grpc.reflection.v1alpha.ServerReflection" in services,
              "reflection lists ModuleService, Health and ServerReflection", out)

        code, out, _ = run_client([target, "describe", "marchproxy.ModuleService"])
        methods = {m["name"]: m for m in out.get("methods", [])}
        check(code == 0 and len(methods) == 22, "ModuleService is described with 22 methods", out)
        check(methods.get("StreamMetrics", {}).get("server_streaming") is True
              and methods.get("SetTrafficWeight", {}).get("input")
              == "marchproxy.SetTrafficWeightRequest",
              "method shapes come through reflection", out)

        code, out, _ = run_client([target, "describe", "grpc.health.v1.Health"])
        check(code == 0 and out.get("file") == "grpc/health/v1/health.proto",
              "reflection describes grpc.health.v1.Health", out)

        method = "marchproxy.ModuleService/SetTrafficWeight"
        code, out, _ = run_client([target, "call", method, '{"version": "v2", "weight": 10}'])
        response = out.get("response", {})
        config = response.get("current_config", {})
        check(code == 0 and out.get("code") == "OK" and response.get("success") is True,
              "SetTrafficWeight v2 10 succeeds", out)
        check(config.get("blue_version") == "v1" and config.get("blue_weight") == 90
              and config.get("green_version") == "v2" and config.get("green_weight") == 10,
              "SetTrafficWeight reports the blue/green split", out)

        code, out, _ = run_client([target, "call", method, '{"version": "v2", "weight": 101}'])
        check(code == 3 and out.get("code") == "INVALID_ARGUMENT",
              "weight 101 is INVALID_ARGUMENT", out)
        check(error_detail(out).get("code") == "STATUS_CODE_INVALID_ARGUMENT",
              "the marchproxy.Error travels in the status details", out)

        code, out, _ = run_client([target, "call", method, '{"version": "v9", "weight": 10}'])
        check(code == 3 and out.get("code") == "NOT_FOUND"
              and error_detail(out).get("code") == "STATUS_CODE_NOT_FOUND",
              "an unknown version is NOT_FOUND", out)

        code, out, _ = run_client([target, "call", "marchproxy.ModuleService/GetActiveVersion"])
        check(code == 0 and out.get("response", {}).get("version_weights")
              == {"v1": 90, "v2": 10}, "GetActiveVersion shows the weights just set", out)
    finally:
        server.stop()

    server = Server(server_path, token="t0ken")
    try:
        target = server.target
        code, out, _ = run_client([target, "call", "marchproxy.ModuleService/GetStatus"])
        check(code == 3 and out.get("code") == "UNAUTHENTICATED",
              "with a token set, a call without it is UNAUTHENTICATED", out)
        code, out, _ = run_client(
            [target, "call", "marchproxy.ModuleService/GetStatus"],
            env_extra={"AILB_CONTROL_TOKEN": "t0ken"})
        check(code == 0 and out.get("response", {}).get("instance", {}).get("module_type")
              == "MODULE_TYPE_AILB", "with the token the call succeeds", out)
        code, out, _ = run_client([target, "call", "grpc.health.v1.Health/Check", "{}"])
        check(code == 0 and out.get("response", {}).get("status") == "SERVING",
              "health (and the reflection behind the call) need no token", out)
    finally:
        server.stop()


def test_keepalive(server_path):
    server = Server(server_path)
    try:
        idle = 12
        code, out, stderr = run_client(
            [server.target, "keepalive", "--idle", str(idle), "--ping-ms", "1000"],
            env_extra={"GRPC_TRACE": "http_keepalive", "GRPC_VERBOSITY": "DEBUG"},
            timeout=idle + 40)
        pings = stderr.count("Start keepalive ping")
        check(pings >= idle // 2, "the client pinged while idle (%d pings in %d s)" % (pings, idle))
        check("too_many_pings" not in stderr, "no GOAWAY too_many_pings",
              "\n".join(l for l in stderr.splitlines() if "GOAWAY" in l.upper())[-2000:])
        check(code == 0 and out.get("goaway") is False and out.get("second_call") == "OK",
              "the channel stayed READY and the call after the idle period succeeded", out)
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="path to control_test_server")
    parser.add_argument("--mode", choices=["reflection", "keepalive"], required=True)
    args = parser.parse_args()
    {"reflection": test_reflection, "keepalive": test_keepalive}[args.mode](args.server)
    if FAILURES:
        print("%d check(s) failed" % len(FAILURES))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
