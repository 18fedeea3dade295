#!/usr/bin/env python3
"""Checks the crate's OpenAPI v3 documents with real kubectl binaries, offline.

A small HTTP server answers what kubectl asks before it reads OpenAPI (/version,
legacy discovery for the served resources) and serves the dumped documents at
/openapi/v3 and, as protobuf, /openapi/v2 (kubectl 1.27 and 1.28 need it). Then each
kubectl runs `explain` on built-in and custom kinds and `create -f
--dry-run=server --validate=strict`, which must pass validation and reach the
server as a POST with fieldValidation=Strict, and `apply -f` over a live
Deployment, which must send a strategic merge patch without asking for
/openapi/v2.

Run from the workspace root:

    cargo run -p openapi --example dump -- /tmp/openapi-v3
    python3 crates/openapi/tools/kubectl_check.py /tmp/openapi-v3 [KUBECTL ...]

Without KUBECTL arguments it uses /usr/lib/google-cloud-sdk/bin/kubectl.1.29
through 1.33 (those present). `-v` prints every kubectl output in full.
It ends with 'N passed, N failed' and exits non-zero on a failure.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DEFAULT_KUBECTLS = [
    f"/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}" for minor in range(29, 34)
]

V2_MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

DEPLOYMENT_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        env:
        - {name: MODE, value: test}
        resources:
          limits: {cpu: 500m, memory: 128Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 80}
---
apiVersion: example.com/v1
kind: Widget
metadata:
  name: blue
  namespace: default
spec:
  color: blue
  size: 3
"""


class Served:
    """The dumped documents and resources, and the requests seen."""

    def __init__(self, folder):
        with open(os.path.join(folder, "resources.json"), "rb") as file:
            self.resources = json.load(file)
        with open(os.path.join(folder, "index.json"), "rb") as file:
            self.index_bytes = file.read()
        self.index = json.loads(self.index_bytes)
        self.documents = {}
        for path in self.index["paths"]:
            with open(os.path.join(folder, path.replace("/", "__") + ".json"), "rb") as file:
                self.documents[path] = file.read()
        v2_file = os.path.join(folder, "v2.pb")
        self.v2 = open(v2_file, "rb").read() if os.path.exists(v2_file) else None
        self.requests = []
        # Objects a GET finds, by URL path (the apply check seeds one).
        self.live = {}
        self.lock = threading.Lock()

    def group_versions(self):
        seen = []
        for resource in self.resources:
            group_version = (resource["group"], resource["version"])
            if group_version not in seen:
                seen.append(group_version)
        return seen

    def api_resource_list(self, group, version):
        entries = []
        for resource in self.resources:
            if (resource["group"], resource["version"]) != (group, version):
                continue
            entries.append({
                "name": resource["plural"],
                "singularName": resource["kind"].lower(),
                "namespaced": resource["namespaced"],
                "kind": resource["kind"],
                "verbs": ["create", "delete", "deletecollection", "get", "list",
                          "patch", "update", "watch"],
            })
            for subresource in resource["subresources"]:
                entries.append({
                    "name": f"{resource['plural']}/{subresource}",
                    "singularName": "",
                    "namespaced": resource["namespaced"],
                    "kind": resource["kind"],
                    "verbs": ["get", "patch", "update"],
                })
        if not entries:
            return None
        group_version = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": group_version, "resources": entries}


def make_handler(served):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self, code, body, content_type="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def not_found(self):
            self.answer(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "message": "the server could not find the requested resource",
                              "reason": "NotFound", "code": 404})

        def record(self, body=None):
            url = urlsplit(self.path)
            with served.lock:
                served.requests.append({"method": self.command, "path": url.path,
                                        "query": parse_qs(url.query), "body": body})
            return url

        def do_GET(self):
            url = self.record()
            path = url.path.rstrip("/")
            if path == "/version":
                return self.answer(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                         "platform": "linux/amd64"})
            if path == "/api":
                return self.answer(200, {"kind": "APIVersions", "versions": ["v1"],
                                         "serverAddressByClientCIDRs": []})
            if path == "/apis":
                groups = {}
                for group, version in served.group_versions():
                    if group:
                        groups.setdefault(group, []).append(version)
                return self.answer(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                    {"name": group,
                     "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                     "preferredVersion": {"groupVersion": f"{group}/{versions[0]}",
                                          "version": versions[0]}}
                    for group, versions in groups.items()]})
            parts = path.strip("/").split("/")
            if parts[0] == "api" and len(parts) == 2:
                listing = served.api_resource_list("", parts[1])
                return self.answer(200, listing) if listing else self.not_found()
            if parts[0] == "apis" and len(parts) == 3:
                listing = served.api_resource_list(parts[1], parts[2])
                return self.answer(200, listing) if listing else self.not_found()
            if path == "/openapi/v2" and served.v2 is not None:
                return self.answer(200, served.v2, V2_MEDIA_TYPE)
            if path == "/openapi/v3":
                return self.answer(200, served.index_bytes)
            with served.lock:
                live = served.live.get(path)
            if live is not None:
                return self.answer(200, live)
            if path.startswith("/openapi/v3/"):
                document_path = path[len("/openapi/v3/"):]
                document = served.documents.get(document_path)
                return self.answer(200, document) if document else self.not_found()
            return self.not_found()

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"undecodable": self.headers.get("Content-Type")}
            self.record(body)
            return self.answer(201, body)

        def do_PATCH(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = {"contentType": self.headers.get("Content-Type"),
                    "patch": self.rfile.read(length).decode(errors="replace")}
            url = self.record(body)
            with served.lock:
                live = served.live.get(url.path)
            return self.answer(200, live) if live is not None else self.not_found()

    return Handler


def kubectl_run(kubectl, kubeconfig, *args, stdin=None):
    completed = subprocess.run([kubectl, "--kubeconfig", kubeconfig, *args], input=stdin,
                               capture_output=True, text=True, timeout=60)
    return completed.returncode, completed.stdout + completed.stderr


def client_minor(kubectl):
    """The minor version of a kubectl client, 0 when it cannot be told."""
    completed = subprocess.run([kubectl, "version", "--client", "-o", "json"],
                               capture_output=True, text=True, timeout=60)
    try:
        minor = json.loads(completed.stdout)["clientVersion"]["minor"]
        return int("".join(c for c in minor if c.isdigit()))
    except (ValueError, KeyError):
        return 0


def main():
    arguments = [argument for argument in sys.argv[1:] if argument != "-v"]
    verbose = "-v" in sys.argv[1:]
    if not arguments:
        print(__doc__)
        return 2
    served = Served(arguments[0])
    kubectls = arguments[1:] or [path for path in DEFAULT_KUBECTLS if os.path.exists(path)]

    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    work = tempfile.mkdtemp(prefix="openapi-kubectl-")
    kubeconfig = os.path.join(work, "kubeconfig")
    with open(kubeconfig, "w") as file:
        file.write(f"""apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: test, user: {{}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test}}}}]
current-context: test
""")
    manifest = os.path.join(work, "deploy.yaml")
    with open(manifest, "w") as file:
        file.write(DEPLOYMENT_YAML)

    # (what, kubectl arguments, texts the output must hold)
    explain_checks = [
        ("explain deployment.spec.strategy", ["explain", "deployment.spec.strategy"],
         ["KIND:", "Deployment", "FIELD: strategy <DeploymentStrategy>",
          "DeploymentStrategy describes how to replace existing pods",
          "rollingUpdate\t<RollingUpdateDeployment>", "type\t<string>"]),
        ("explain pods.spec.containers", ["explain", "pods.spec.containers"],
         ["KIND:", "Pod", "FIELD: containers <[]Container>", "-required-",
          "image\t<string>", "ports\t<[]ContainerPort>", "resources\t<ResourceRequirements>"]),
        ("explain deployment", ["explain", "deployment"],
         ["GROUP:", "apps", "Deployment enables declarative updates", "metadata\t<ObjectMeta>",
          "spec\t<DeploymentSpec>", "status\t<DeploymentStatus>"]),
        ("explain services.spec.ports.targetPort", ["explain", "services.spec.ports.targetPort"],
         ["FIELD: targetPort <IntOrString>", "IntOrString is a type"]),
        ("explain widgets.spec (custom resource)", ["explain", "widgets.spec"],
         ["KIND:", "Widget", "color\t<string> -required-", "The widget's colour.",
          "size\t<integer>"]),
        ("explain customresourcedefinitions.spec.versions",
         ["explain", "customresourcedefinitions.spec.versions"],
         ["<[]CustomResourceDefinitionVersion>", "schema\t<CustomResourceValidation>"]),
    ]

    passed = failed = 0

    def report(ok, kubectl, what, detail):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(f"{'ok  ' if ok else 'FAIL'} {os.path.basename(kubectl)}: {what}")
        if detail and (verbose or not ok):
            print("      " + detail.replace("\n", "\n      "))

    for kubectl in kubectls:
        for what, args, expected in explain_checks:
            code, output = kubectl_run(kubectl, kubeconfig, *args)
            missing = [text for text in expected if text not in output]
            report(code == 0 and not missing, kubectl, what,
                   (f"missing {missing}\n" if missing else "") + output)

        with served.lock:
            served.requests.clear()
        code, output = kubectl_run(kubectl, kubeconfig, "create", "-f", manifest,
                                   "--dry-run=server", "--validate=strict")
        with served.lock:
            posts = [request for request in served.requests if request["method"] == "POST"]
            v2_asked = any(request["path"] == "/openapi/v2" for request in served.requests)
        strict = [request for request in posts
                  if request["query"].get("fieldValidation") == ["Strict"]
                  and request["query"].get("dryRun") == ["All"]]
        report(code == 0 and len(strict) == 3, kubectl,
               "create -f (Deployment, Service, Widget) --dry-run=server --validate=strict",
               f"rc={code}, {len(strict)}/{len(posts)} POSTs with fieldValidation=Strict&dryRun=All, "
               f"/openapi/v2 asked: {v2_asked}\n{output}")

        # Client-side apply over a live object: kubectl computes a strategic merge
        # patch, from the v3 documents' patch extensions when they have them (and
        # then does not ask for /openapi/v2).
        deployment_path = "/apis/apps/v1/namespaces/default/deployments/web"
        applied = DEPLOYMENT_YAML.split("---")[0]
        code, output = kubectl_run(kubectl, kubeconfig, "create", "-f", "-", "--dry-run=client",
                                   "-o", "json", stdin=applied)
        live = json.loads(output) if code == 0 else {}
        # The live object and its last-applied configuration run an older image.
        for container in live.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            container["image"] = "nginx:1.26"
        old = json.loads(json.dumps(live))
        live.setdefault("metadata", {})["annotations"] = {
            "kubectl.kubernetes.io/last-applied-configuration": json.dumps(old)}
        live["metadata"]["uid"] = "d0f5e3c2-0000-4000-8000-000000000001"
        with served.lock:
            served.requests.clear()
            served.live = {deployment_path: live}
        code, output = kubectl_run(kubectl, kubeconfig, "apply", "-f", "-", stdin=applied)
        with served.lock:
            patches = [request for request in served.requests if request["method"] == "PATCH"]
            v2_asked = any(request["path"] == "/openapi/v2" for request in served.requests)
            served.live = {}
        strategic = [request for request in patches
                     if request["body"]["contentType"] == "application/strategic-merge-patch+json"
                     and request["query"].get("fieldValidation") == ["Strict"]]
        patch_text = strategic[0]["body"]["patch"] if strategic else ""
        # kubectl 1.27 and 1.28 fetch /openapi/v2 before every apply whatever v3 holds.
        v2_expected = client_minor(kubectl) < 29
        report(code == 0 and len(strategic) == 1 and "$setElementOrder/containers" in patch_text
               and (v2_expected or not v2_asked), kubectl, "apply -f over a live Deployment (strategic merge patch)",
               f"rc={code}, /openapi/v2 asked: {v2_asked}, patch: {patch_text}\n{output}")

    server.shutdown()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
