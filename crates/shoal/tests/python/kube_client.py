"""The official Python `kubernetes` client against shoal's Kubernetes API.

Run by crates/shoal/tests/kube_python.rs with the venv's python and the
admin kubeconfig of a running `shoal up` as its one argument. Every response
goes through the client's strict models, which is the point: a missing
required field or a wrong shape fails here. Exits non-zero with a message
naming the first failing step.
"""

import sys
import traceback

from kubernetes import client, config, dynamic, watch
from kubernetes.client.rest import ApiException

NAMESPACE = "py-client"
step_name = "setup"


def step(name):
    global step_name
    step_name = name
    print(f"- {name}", flush=True)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_api_error(status, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ApiException as error:
        check(error.status == status, f"expected HTTP {status}, got {error.status}: {error.body}")
        return error
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


def deployment_body(name, replicas):
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name=name, image="quay.io/coreos/dex:v2")]
                ),
            ),
        ),
    )


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    api_client = client.ApiClient()
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)

    step("version")
    version = client.VersionApi(api_client).get_code()
    check(version.major == "1", f"version: {version}")

    step("namespaces: create, read, list")
    created = core.create_namespace({"metadata": {"name": NAMESPACE}})
    check(created.metadata.name == NAMESPACE, "created namespace name")
    check(created.status.phase == "Active", f"namespace phase {created.status.phase}")
    namespace = core.read_namespace(NAMESPACE)
    check(namespace.metadata.labels.get("kubernetes.io/metadata.name") == NAMESPACE,
          f"namespace labels {namespace.metadata.labels}")
    names = [item.metadata.name for item in core.list_namespace().items]
    for expected in ["default", "kube-system", "kube-public", "kube-node-lease", NAMESPACE]:
        check(expected in names, f"{expected} missing from {names}")

    step("configmaps: watch sees ADDED, MODIFIED, DELETED")
    listed = core.list_namespaced_config_map(NAMESPACE)
    check(isinstance(listed.items, list), "configmap list items")
    stream_events = []
    watcher = watch.Watch()
    configmap = core.create_namespaced_config_map(
        NAMESPACE, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={"a": "1"})
    )
    check(configmap.data == {"a": "1"}, f"configmap data {configmap.data}")

    step("configmaps: read, list with a label selector, replace, patches")
    configmap = core.read_namespaced_config_map("settings", NAMESPACE)
    configmap.data["b"] = "2"
    configmap.metadata.labels = {"tier": "config"}
    replaced = core.replace_namespaced_config_map("settings", NAMESPACE, configmap)
    check(replaced.data == {"a": "1", "b": "2"}, f"replaced data {replaced.data}")
    selected = core.list_namespaced_config_map(NAMESPACE, label_selector="tier=config")
    check([item.metadata.name for item in selected.items] == ["settings"], "label selector")
    check(core.list_namespaced_config_map(NAMESPACE, label_selector="tier!=config").items == [],
          "negative label selector")

    step("configmaps: stale resourceVersion on replace is 409 Conflict")
    stale = configmap  # carries the resourceVersion from before the replace
    stale.data["c"] = "3"
    error = expect_api_error(409, core.replace_namespaced_config_map, "settings", NAMESPACE, stale)
    check("the object has been modified" in error.body, f"conflict message: {error.body}")

    # Strategic merge patch (a dict), JSON patch (a list), merge patch.
    patched = core.patch_namespaced_config_map("settings", NAMESPACE, {"data": {"d": "4"}})
    check(patched.data.get("d") == "4", f"strategic merge patch: {patched.data}")
    patched = core.patch_namespaced_config_map(
        "settings", NAMESPACE,
        [{"op": "test", "path": "/data/a", "value": "1"},
         {"op": "replace", "path": "/data/a", "value": "one"}])
    check(patched.data.get("a") == "one", f"json patch: {patched.data}")
    expect_api_error(422, core.patch_namespaced_config_map, "settings", NAMESPACE,
                     [{"op": "test", "path": "/data/a", "value": "wrong"}])
    patched = core.patch_namespaced_config_map(
        "settings", NAMESPACE, {"data": {"b": None}}, _content_type="application/merge-patch+json")
    check("b" not in patched.data, f"merge patch: {patched.data}")

    step("configmaps: server-side apply")
    applied = core.patch_namespaced_config_map(
        "applied", NAMESPACE,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "1"}},
        field_manager="py-client", _content_type="application/apply-patch+yaml")
    check(applied.data == {"x": "1"}, f"apply created: {applied.data}")
    managers = [entry.manager for entry in applied.metadata.managed_fields or []]
    check("py-client" in managers, f"managedFields managers {managers}")
    applied = core.patch_namespaced_config_map(
        "applied", NAMESPACE,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "2"}},
        field_manager="py-client", _content_type="application/apply-patch+yaml")
    check(applied.data == {"x": "2"}, f"apply updated: {applied.data}")

    step("configmaps: delete, then the watch's events")
    status = core.delete_namespaced_config_map("settings", NAMESPACE)
    check(status is not None, "delete answer")
    expect_api_error(404, core.read_namespaced_config_map, "settings", NAMESPACE)
    for event in watcher.stream(core.list_namespaced_config_map, NAMESPACE,
                                resource_version=listed.metadata.resource_version,
                                field_selector="metadata.name=settings", timeout_seconds=5):
        stream_events.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            watcher.stop()
    types = [event_type for event_type, _ in stream_events]
    check(types[0] == "ADDED" and "MODIFIED" in types and types[-1] == "DELETED",
          f"watch events {stream_events}")

    step("deployments: create, list, read, scale subresource, patch, replace")
    deployment = apps.create_namespaced_deployment(NAMESPACE, deployment_body("dex", 3))
    check(deployment.spec.strategy.type == "RollingUpdate", "deployment defaults")
    check(deployment.metadata.generation == 1, f"generation {deployment.metadata.generation}")
    check([d.metadata.name for d in apps.list_namespaced_deployment(NAMESPACE).items] == ["dex"],
          "deployment list")
    scale = apps.read_namespaced_deployment_scale("dex", NAMESPACE)
    check(scale.spec.replicas == 3, f"scale {scale.spec}")
    scale = apps.patch_namespaced_deployment_scale("dex", NAMESPACE, {"spec": {"replicas": 5}})
    check(scale.spec.replicas == 5, f"patched scale {scale.spec}")
    deployment = apps.patch_namespaced_deployment(
        "dex", NAMESPACE,
        {"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "dex"}],
                                        "containers": [{"name": "dex", "image": "quay.io/coreos/dex:v2.1"}]}}}})
    check(deployment.spec.replicas == 5, "scale reached the deployment")
    check(deployment.spec.template.spec.containers[0].image == "quay.io/coreos/dex:v2.1", "set image")
    check(deployment.metadata.generation == 3, f"generation {deployment.metadata.generation}")
    deployment.spec.replicas = 2
    deployment = apps.replace_namespaced_deployment("dex", NAMESPACE, deployment)
    check(deployment.spec.replicas == 2, "replace")

    step("services: create (ClusterIP allocated), read, delete")
    service = core.create_namespaced_service(NAMESPACE, client.V1Service(
        metadata=client.V1ObjectMeta(name="dex"),
        spec=client.V1ServiceSpec(selector={"app": "dex"},
                                  ports=[client.V1ServicePort(port=80, target_port=5556)])))
    check(service.spec.cluster_ip and service.spec.cluster_ip != "None",
          f"cluster ip {service.spec.cluster_ip}")
    check(service.spec.type == "ClusterIP", f"service type {service.spec.type}")
    check(core.read_namespaced_service("dex", NAMESPACE).spec.ports[0].port == 80, "service port")
    core.delete_namespaced_service("dex", NAMESPACE)

    step("pods: create, list, read, patch, delete")
    pod = core.create_namespaced_pod(NAMESPACE, client.V1Pod(
        metadata=client.V1ObjectMeta(name="one", labels={"app": "one"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="one", image="busybox:1.36")])))
    check(pod.spec.restart_policy == "Always", f"pod defaults {pod.spec.restart_policy}")
    check(pod.status.phase == "Pending", f"pod phase {pod.status.phase}")
    check([p.metadata.name for p in core.list_namespaced_pod(NAMESPACE, label_selector="app=one").items] == ["one"],
          "pod list")
    pod = core.patch_namespaced_pod("one", NAMESPACE, {"metadata": {"labels": {"extra": "yes"}}})
    check(pod.metadata.labels == {"app": "one", "extra": "yes"}, f"pod labels {pod.metadata.labels}")
    core.delete_namespaced_pod("one", NAMESPACE)
    expect_api_error(404, core.read_namespaced_pod, "one", NAMESPACE)

    step("deployments: delete with propagationPolicy=Foreground")
    apps.delete_namespaced_deployment("dex", NAMESPACE, propagation_policy="Foreground")

    step("dynamic client: get, create, patch, delete")
    dyn = dynamic.DynamicClient(api_client)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    created = configmaps.create(namespace=NAMESPACE, body={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dynamic"}, "data": {"k": "v"}})
    check(created.data.k == "v", "dynamic create")
    fetched = configmaps.get(name="dynamic", namespace=NAMESPACE)
    check(fetched.metadata.name == "dynamic", "dynamic get")
    patched = configmaps.patch(name="dynamic", namespace=NAMESPACE, body={"data": {"k": "w"}},
                               content_type="application/merge-patch+json")
    check(patched.data.k == "w", "dynamic patch")
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    check(deployments.get(namespace=NAMESPACE).items is not None, "dynamic list")
    configmaps.delete(name="dynamic", namespace=NAMESPACE)

    step("configmaps: pages with limit and continue, at one resourceVersion")
    for index in range(25):
        core.create_namespaced_config_map(NAMESPACE, {
            "metadata": {"name": f"page-{index:02}", "labels": {"paged": "yes" if index % 2 else "no"}}})
    names, token, versions = [], None, set()
    while True:
        page = core.list_namespaced_config_map(NAMESPACE, label_selector="paged=yes", limit=4,
                                               _continue=token)
        check(len(page.items) <= 4, f"a page holds at most the limit, got {len(page.items)}")
        names += [item.metadata.name for item in page.items]
        versions.add(page.metadata.resource_version)
        token = page.metadata._continue
        if not token:
            break
    expected = [f"page-{index:02}" for index in range(25) if index % 2]
    check(names == expected, f"paged names {names}")
    check(len(versions) == 1, f"every page is read at one resourceVersion, got {versions}")
    core.delete_collection_namespaced_config_map(NAMESPACE, label_selector="paged")
    left = core.list_namespaced_config_map(NAMESPACE, label_selector="paged")
    check(left.items == [], f"deletecollection left {[item.metadata.name for item in left.items]}")

    step("namespaces: delete")
    core.delete_namespace(NAMESPACE)
    print("ok", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception:  # noqa: BLE001 - report any failure with its step
        print(f"FAILED at step {step_name!r}:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
