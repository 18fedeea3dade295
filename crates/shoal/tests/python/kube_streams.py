"""The Python `kubernetes` client's streams against shoal, through a node
agent: `stream(connect_get_namespaced_pod_exec, ...)` with and without a
terminal and stdin, its exit code, and pod logs with options and errors.
Run by tests/kube_streams.rs with the kubeconfig as its argument; pods
`busy` (one container, app) and `two` (containers a and b) exist."""

import sys

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

config.load_kube_config(sys.argv[1])
core = client.CoreV1Api()


def step(name):
    print("step:", name, file=sys.stderr, flush=True)


def check(condition, message):
    if not condition:
        print("FAILED:", message)
        sys.exit(1)


step("preloaded")
# Preloaded: the output as one string.
output = stream(core.connect_get_namespaced_pod_exec, "busy", "default",
                command=["echo", "hi"], stderr=True, stdin=False, stdout=True,
                tty=False)
check(output == "hi\n", f"preloaded exec output {output!r}")

step("streamed")
# Streamed: stdout and stderr apart, and the exit code from channel 3.
response = stream(core.connect_get_namespaced_pod_exec, "busy", "default",
                  command=["sh", "-c", "echo out; echo err >&2; exit 2"],
                  stderr=True, stdin=False, stdout=True, tty=False,
                  _preload_content=False)
check(response.subprotocol == "v5.channel.k8s.io",
      f"subprotocol {response.subprotocol!r}")
response.run_forever(timeout=20)
stdout, stderr = response.read_stdout(), response.read_stderr()
check(stdout == "out\n", f"stdout {stdout!r}")
check(stderr == "err\n", f"stderr {stderr!r}")
check(response.returncode == 2, f"exit code {response.returncode!r}")
response.close()

step("v4")
# The client offers v5 and v4; older releases offer v4 alone.
response = stream(core.connect_get_namespaced_pod_exec, "busy", "default",
                  command=["sh", "-c", "echo v4; exit 4"],
                  stderr=True, stdin=False, stdout=True, tty=False,
                  _headers={"sec-websocket-protocol": "v4.channel.k8s.io"},
                  _preload_content=False)
response.run_forever(timeout=20)
check(response.subprotocol == "v4.channel.k8s.io",
      f"subprotocol {response.subprotocol!r}")
stdout = response.read_stdout()
check(stdout == "v4\n", f"v4 stdout {stdout!r}")
check(response.returncode == 4, f"v4 exit code {response.returncode!r}")
response.close()

step("stdin")
# stdin.
response = stream(core.connect_get_namespaced_pod_exec, "busy", "default",
                  command=["sh", "-c", "read line; echo got $line"],
                  stderr=True, stdin=True, stdout=True, tty=False,
                  _preload_content=False)
response.write_stdin("typed\n")
response.run_forever(timeout=20)
stdout = response.read_stdout()
check(stdout == "got typed\n", f"stdin round trip {stdout!r}")
check(response.returncode == 0, f"exit code {response.returncode!r}")
response.close()

step("tty")
# A terminal.
response = stream(core.connect_get_namespaced_pod_exec, "busy", "default",
                  command=["sh", "-c", "tty >/dev/null && echo tty-ok"],
                  stderr=True, stdin=False, stdout=True, tty=True,
                  _preload_content=False)
response.run_forever(timeout=20)
stdout = response.read_stdout()
check("tty-ok" in stdout, f"tty output {stdout!r}")
response.close()

step("logs")
# Logs.
log = core.read_namespaced_pod_log("busy", "default", tail_lines=1)
check(log == "recent line\n", f"log tail {log!r}")
log = core.read_namespaced_pod_log("two", "default", container="a")
check(log == "from a\n", f"log of container a {log!r}")
try:
    core.read_namespaced_pod_log("two", "default")
    check(False, "a log of a two-container pod without a container name")
except ApiException as error:
    check(error.status == 400, f"status {error.status}")
    check("a container name must be specified for pod two, choose one of: [a b]"
          in error.body, f"body {error.body}")
print("ok")
