#!/usr/bin/env python3
"""Remakes the test fixtures in tests/fixtures/ from real kubectl request bodies.

Usage:
    tools/capture_fixtures.py [KUBECTL_PB] [KUBECTL_JSON]

KUBECTL_PB is a kubectl that sends protobuf bodies (1.32 or later; default
/usr/lib/google-cloud-sdk/bin/kubectl.1.32) and KUBECTL_JSON one that sends
JSON (1.31 or earlier; default .../kubectl.1.31). For each command in
COMMANDS, the script runs both kubectls against a small recording HTTP server
on 127.0.0.1 and writes the body each one sent: `<name>.pb` (the `k8s\\0`
envelope, exactly as sent) and `<name>.json` (pretty-printed, since
`serde_json::Value` comparison ignores formatting).

The server answers `GET /version` as a v1.32.0 API server and every POST with
201 and the request body echoed back with the request's Content-Type; kubectl
accepts both protobuf and JSON answers, so it prints its usual "created" line.
Any other request gets 404 and is logged to stderr.
"""

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading

BIN = "/usr/lib/google-cloud-sdk/bin"

# fixture name -> kubectl arguments. The server never stores anything, so the
# same names can be created by both kubectls.
COMMANDS = {
    "deployment_dex": ["create", "deployment", "dex", "--image=quay.io/coreos/dex:v2", "--replicas=3"],
    "deployment_web": ["create", "deployment", "web", "--image=nginx", "--port=80"],
    "namespace": ["create", "namespace", "x"],
    "configmap": ["create", "configmap", "c", "--from-literal=a=b"],
    "secret_generic": ["create", "secret", "generic", "s", "--from-literal=p=q"],
    "service_clusterip": ["create", "service", "clusterip", "svc", "--tcp=80:8080"],
    "job": ["create", "job", "j", "--image=busybox"],
    "cronjob": ["create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"],
    "service_nodeport": ["create", "service", "nodeport", "np", "--tcp=5678:8080", "--node-port=30080"],
    "serviceaccount": ["create", "serviceaccount", "robot"],
    "role": ["create", "role", "pod-reader", "--verb=get,list", "--resource=pods"],
    "clusterrolebinding": ["create", "clusterrolebinding", "crb", "--clusterrole=view", "--user=alice", "--serviceaccount=default:robot"],
    "quota": ["create", "quota", "q", "--hard=cpu=1,memory=1Gi,pods=10"],
    "pdb": ["create", "poddisruptionbudget", "pdb", "--selector=app=web", "--min-available=50%"],
    "priorityclass": ["create", "priorityclass", "high", "--value=1000", "--description=important"],
    "ingress": ["create", "ingress", "ing", "--rule=foo.com/bar=svc1:8080,tls=my-cert"],
    "secret_docker_registry": ["create", "secret", "docker-registry", "reg", "--docker-server=r.example", "--docker-username=u", "--docker-password=p"],
}


def resource(name, kind, namespaced=True):
    return {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}


# Legacy discovery, just enough for the kubectl commands that resolve a resource
# name (create role --resource=pods) or a group before posting.
GROUPS = {
    "rbac.authorization.k8s.io/v1": [resource("roles", "Role"), resource("clusterroles", "ClusterRole", False),
                                     resource("rolebindings", "RoleBinding"),
                                     resource("clusterrolebindings", "ClusterRoleBinding", False)],
    "apps/v1": [resource("deployments", "Deployment"), resource("replicasets", "ReplicaSet")],
    "batch/v1": [resource("jobs", "Job"), resource("cronjobs", "CronJob")],
    "policy/v1": [resource("poddisruptionbudgets", "PodDisruptionBudget")],
    "scheduling.k8s.io/v1": [resource("priorityclasses", "PriorityClass", False)],
    "networking.k8s.io/v1": [resource("ingresses", "Ingress")],
}
CORE = [resource("pods", "Pod"), resource("services", "Service"), resource("namespaces", "Namespace", False),
        resource("configmaps", "ConfigMap"), resource("secrets", "Secret"),
        resource("serviceaccounts", "ServiceAccount"), resource("resourcequotas", "ResourceQuota")]


def discovery(path):
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/api/v1":
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE}
    if path == "/apis":
        groups = []
        for group_version in GROUPS:
            group, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
    group_version = path.removeprefix("/apis/")
    if group_version in GROUPS:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": GROUPS[group_version]}
    return None


class Recorder(http.server.BaseHTTPRequestHandler):
    bodies = []

    def log_message(self, format, *args):
        pass

    def _answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.split("?")[0] == "/version":
            version = {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}
            self._answer(200, "application/json", json.dumps(version).encode())
            return
        answer = discovery(self.path.split("?")[0])
        if answer is not None:
            self._answer(200, "application/json", json.dumps(answer).encode())
            return
        sys.stderr.write(f"unanswered: GET {self.path}\n")
        self._answer(404, "application/json", b'{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}')

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        content_type = self.headers.get("Content-Type", "")
        Recorder.bodies.append((self.path, content_type, body))
        self._answer(201, content_type, body)


def run(kubectl, kubeconfig, args):
    Recorder.bodies.clear()
    result = subprocess.run([kubectl, "--kubeconfig", kubeconfig] + args, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{kubectl} {' '.join(args)} failed: {result.stderr}")
    if len(Recorder.bodies) != 1:
        sys.exit(f"{kubectl} {' '.join(args)}: expected one POST, saw {len(Recorder.bodies)}")
    return Recorder.bodies[0]


def main():
    kubectl_pb = sys.argv[1] if len(sys.argv) > 1 else f"{BIN}/kubectl.1.32"
    kubectl_json = sys.argv[2] if len(sys.argv) > 2 else f"{BIN}/kubectl.1.31"
    fixtures = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
    os.makedirs(fixtures, exist_ok=True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as kubeconfig:
        kubeconfig.write(f"""apiVersion: v1
kind: Config
clusters:
- name: capture
  cluster:
    server: http://127.0.0.1:{port}
contexts:
- name: capture
  context:
    cluster: capture
    user: capture
    namespace: default
users:
- name: capture
  user: {{}}
current-context: capture
""")
        kubeconfig.flush()
        for name, args in COMMANDS.items():
            path, content_type, body = run(kubectl_pb, kubeconfig.name, args)
            if content_type != "application/vnd.kubernetes.protobuf":
                sys.exit(f"{name}: {kubectl_pb} sent {content_type}, not protobuf")
            with open(os.path.join(fixtures, name + ".pb"), "wb") as out:
                out.write(body)
            json_path, content_type, body = run(kubectl_json, kubeconfig.name, args)
            if content_type != "application/json":
                sys.exit(f"{name}: {kubectl_json} sent {content_type}, not JSON")
            if json_path != path:
                sys.exit(f"{name}: the two kubectls posted to {path} and {json_path}")
            with open(os.path.join(fixtures, name + ".json"), "w") as out:
                out.write(json.dumps(json.loads(body), indent=2) + "\n")
            print(f"{name}: POST {path}")
    server.shutdown()


if __name__ == "__main__":
    main()
