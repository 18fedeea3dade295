//! The shape of the index and the group-version documents: what kubectl's
//! explain, validation and apply read from them.

mod served;

use openapi::{
    Resource, group_version_path, parse_group_version_path, v3_document, v3_hash, v3_index,
};
use serde_json::{Value, json};

fn document(group: &str, version: &str) -> Value {
    v3_document(&served::resources(), group, version).expect("group-version is served")
}

fn schema<'a>(document: &'a Value, name: &str) -> &'a Value {
    &document["components"]["schemas"][name]
}

/// Every operation of a document: (path, method, operation).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths").iter() {
        for (method, operation) in item.as_object().expect("path item").iter() {
            if method != "parameters" {
                operations.push((path.clone(), method.clone(), operation.clone()));
            }
        }
    }
    operations
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, member) in object {
                if key == "$ref"
                    && let Some(target) = member.as_str()
                {
                    refs.push(target.to_string());
                }
                collect_refs(member, refs);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

fn parameter_names(operation: &Value) -> Vec<String> {
    operation["parameters"]
        .as_array()
        .map(|parameters| {
            parameters
                .iter()
                .filter_map(|parameter| parameter["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn index_lists_every_served_group_version_with_its_document_hash() {
    let resources = served::resources();
    let index = v3_index(&resources);
    let paths = index["paths"].as_object().expect("paths");
    let expected = [
        "api/v1",
        "apis/apiextensions.k8s.io/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/coordination.k8s.io/v1",
        "apis/discovery.k8s.io/v1",
        "apis/example.com/v1",
        "apis/policy/v1",
    ];
    let mut listed: Vec<&str> = paths.keys().map(String::as_str).collect();
    listed.sort_unstable();
    assert_eq!(listed, expected);
    for (group, version) in [("", "v1"), ("apps", "v1"), ("example.com", "v1")] {
        let hash = v3_hash(&document(group, version));
        let path = group_version_path(group, version);
        assert_eq!(
            paths[&path]["serverRelativeURL"],
            json!(format!("/openapi/v3/{path}?hash={hash}"))
        );
    }
}

#[test]
fn hash_is_upper_case_hex_sha512_of_the_serialized_document() {
    let hash = v3_hash(&json!({"paths": {}}));
    assert_eq!(hash.len(), 128);
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    );
    // sha512 of the bytes `{}`, as Go's fmt.Sprintf("%X", sha512.Sum512(data)) writes it.
    assert_eq!(
        v3_hash(&json!({})),
        "27C74670ADB75075FAD058D5CEAF7B20C4E7786C83BAE8A32F626F9782AF34C9A33C2046EF60FD2A7878D378E29FEC851806BBD9A67878F3A9F1CDA4830763FD"
    );
}

#[test]
fn hash_changes_when_the_served_resources_change() {
    let resources = served::resources();
    let before = v3_hash(&v3_document(&resources, "apps", "v1").expect("apps/v1"));
    let mut changed = resources.clone();
    for resource in changed.iter_mut() {
        if resource.kind == "DaemonSet" {
            resource.subresources.push("scale".to_string());
        }
    }
    let after = v3_hash(&v3_document(&changed, "apps", "v1").expect("apps/v1"));
    assert_ne!(before, after);
    // And the same input gives the same document, so the same hash.
    assert_eq!(
        before,
        v3_hash(&v3_document(&resources, "apps", "v1").expect("apps/v1"))
    );
}

#[test]
fn unserved_group_version_has_no_document() {
    let resources = served::resources();
    assert!(v3_document(&resources, "apps", "v1beta1").is_none());
    assert!(v3_document(&resources, "networking.k8s.io", "v1").is_none());
    assert!(v3_document(&[], "", "v1").is_none());
    assert_eq!(v3_index(&[]), json!({"paths": {}}));
}

#[test]
fn every_reference_resolves_within_its_document() {
    let resources = served::resources();
    for path in v3_index(&resources)["paths"]
        .as_object()
        .expect("paths")
        .keys()
    {
        let (group, version) = parse_group_version_path(path).expect("document path");
        let document = document(group, version);
        let mut refs = Vec::new();
        collect_refs(&document, &mut refs);
        assert!(!refs.is_empty());
        for target in refs {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{path}: reference {target} is not to a component"));
            assert!(
                document["components"]["schemas"].get(name).is_some(),
                "{path}: {target} does not resolve"
            );
        }
    }
}

#[test]
fn patch_operations_tell_kubectl_the_server_validates() {
    for (group, version) in [("", "v1"), ("apps", "v1"), ("example.com", "v1")] {
        let document = document(group, version);
        let patches: Vec<_> = operations(&document)
            .into_iter()
            .filter(|(_, method, _)| method == "patch")
            .collect();
        assert!(!patches.is_empty());
        for (path, _, operation) in patches {
            assert_eq!(operation["x-kubernetes-action"], "patch", "{path}");
            let gvk = &operation["x-kubernetes-group-version-kind"];
            assert!(
                gvk["kind"].is_string() && gvk["version"].is_string(),
                "{path}"
            );
            let names = parameter_names(&operation);
            for name in ["dryRun", "fieldManager", "fieldValidation", "force"] {
                assert!(names.iter().any(|n| n == name), "{path} lacks {name}");
            }
            let media_types: Vec<&String> = operation["requestBody"]["content"]
                .as_object()
                .expect("patch body")
                .keys()
                .collect();
            let strategic = media_types
                .iter()
                .any(|media_type| *media_type == "application/strategic-merge-patch+json");
            assert_eq!(strategic, group != "example.com", "{path}");
            for media_type in [
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
            ] {
                assert!(
                    media_types.iter().any(|m| *m == media_type),
                    "{path} lacks {media_type}"
                );
            }
        }
    }
}

#[test]
fn deployment_operations_are_upstreams() {
    let document = document("apps", "v1");
    let deployment = json!({"group": "apps", "kind": "Deployment", "version": "v1"});
    let item = &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    for (method, action, operation_id) in [
        ("get", "get", "readAppsV1NamespacedDeployment"),
        ("put", "put", "replaceAppsV1NamespacedDeployment"),
        ("patch", "patch", "patchAppsV1NamespacedDeployment"),
        ("delete", "delete", "deleteAppsV1NamespacedDeployment"),
    ] {
        assert_eq!(item[method]["x-kubernetes-action"], action);
        assert_eq!(item[method]["operationId"], operation_id);
        assert_eq!(item[method]["x-kubernetes-group-version-kind"], deployment);
        assert_eq!(item[method]["tags"], json!(["apps_v1"]));
    }
    let item_parameters = parameter_names(item);
    assert_eq!(item_parameters, ["name", "namespace", "pretty"]);

    let collection = &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert_eq!(collection["get"]["x-kubernetes-action"], "list");
    assert_eq!(collection["post"]["x-kubernetes-action"], "post");
    assert_eq!(
        collection["delete"]["x-kubernetes-action"],
        "deletecollection"
    );
    assert_eq!(
        collection["delete"]["operationId"],
        "deleteCollectionAppsV1NamespacedDeployment"
    );
    let create_parameters = parameter_names(&collection["post"]);
    assert_eq!(
        create_parameters,
        ["dryRun", "fieldManager", "fieldValidation"]
    );
    assert_eq!(
        collection["get"]["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"})
    );
    assert_eq!(
        document["paths"]["/apis/apps/v1/deployments"]["get"]["operationId"],
        "listAppsV1DeploymentForAllNamespaces"
    );

    let scale = &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
    assert_eq!(
        scale["patch"]["x-kubernetes-group-version-kind"],
        json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
    );
    assert_eq!(
        scale["get"]["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"$ref": "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"})
    );
    let status =
        &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"];
    assert_eq!(
        status["patch"]["operationId"],
        "patchAppsV1NamespacedDeploymentStatus"
    );
    assert_eq!(
        status["patch"]["x-kubernetes-group-version-kind"],
        deployment
    );
}

#[test]
fn core_operations_cover_cluster_scoped_kinds_and_pod_subresources() {
    let document = document("", "v1");
    let namespace = &document["paths"]["/api/v1/namespaces/{name}"];
    assert_eq!(namespace["get"]["operationId"], "readCoreV1Namespace");
    assert_eq!(parameter_names(namespace), ["name", "pretty"]);
    assert_eq!(namespace["get"]["tags"], json!(["core_v1"]));
    assert!(document["paths"].get("/api/v1/namespaces").is_some());

    let pod = "/api/v1/namespaces/{namespace}/pods/{name}";
    let eviction = &document["paths"][format!("{pod}/eviction")]["post"];
    assert_eq!(
        eviction["x-kubernetes-group-version-kind"],
        json!({"group": "policy", "kind": "Eviction", "version": "v1"})
    );
    assert!(schema(&document, "io.k8s.api.policy.v1.Eviction").is_object());
    let binding = &document["paths"][format!("{pod}/binding")]["post"];
    assert_eq!(binding["operationId"], "createCoreV1NamespacedPodBinding");
    assert!(schema(&document, "io.k8s.api.core.v1.Binding").is_object());
    let exec = &document["paths"][format!("{pod}/exec")];
    assert_eq!(exec["get"]["x-kubernetes-action"], "connect");
    assert_eq!(
        exec["post"]["operationId"],
        "connectPostCoreV1NamespacedPodExec"
    );
    assert!(parameter_names(&exec["get"]).iter().any(|n| n == "command"));
    let log = &document["paths"][format!("{pod}/log")]["get"];
    assert_eq!(log["operationId"], "readCoreV1NamespacedPodLog");
    assert!(parameter_names(log).iter().any(|n| n == "follow"));

    // Operation IDs are unique in a document, as OpenAPI requires.
    let mut ids: Vec<String> = operations(&document)
        .iter()
        .map(|(_, _, operation)| operation["operationId"].as_str().expect("id").to_string())
        .collect();
    let n_operations = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n_operations);
}

#[test]
fn kind_schemas_carry_upstream_names_docs_and_group_version_kind() {
    let document = document("apps", "v1");
    let deployment = schema(&document, "io.k8s.api.apps.v1.Deployment");
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert!(
        deployment["description"]
            .as_str()
            .expect("description")
            .starts_with("Deployment enables declarative updates")
    );
    // A reference with a description beside it is wrapped in allOf, as upstream does.
    assert_eq!(
        deployment["properties"]["spec"]["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}])
    );
    let spec = schema(&document, "io.k8s.api.apps.v1.DeploymentSpec");
    assert_eq!(spec["required"], json!(["selector", "template"]));
    assert_eq!(
        spec["properties"]["strategy"]["x-kubernetes-patch-strategy"],
        "retainKeys"
    );
    let list = schema(&document, "io.k8s.api.apps.v1.DeploymentList");
    assert_eq!(
        list["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
    );
    assert_eq!(
        list["properties"]["items"]["items"],
        json!({"$ref": "#/components/schemas/io.k8s.api.apps.v1.Deployment"})
    );
    assert_eq!(list["required"], json!(["items"]));
    // Meta kinds the operations refer to are present, without a kind of this group.
    for name in [
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
        "io.k8s.api.autoscaling.v1.Scale",
    ] {
        assert!(schema(&document, name).is_object(), "{name}");
    }
    assert_eq!(
        schema(&document, "io.k8s.apimachinery.pkg.apis.meta.v1.Status")["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "Status", "version": "v1"}])
    );
    assert!(schema(&document, "io.k8s.api.batch.v1.Job").is_null());
}

#[test]
fn fields_carry_patch_and_list_extensions() {
    let document = document("", "v1");
    let property = |type_name: &str, field: &str| {
        schema(&document, &format!("io.k8s.api.core.v1.{type_name}"))["properties"][field].clone()
    };
    let containers = property("PodSpec", "containers");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        property("PodSpec", "volumes")["x-kubernetes-patch-strategy"],
        "merge,retainKeys"
    );
    let ports = property("Container", "ports");
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(
        ports["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    assert_eq!(
        property("ServiceSpec", "ports")["x-kubernetes-list-map-keys"],
        json!(["port", "protocol"])
    );
    assert_eq!(
        property("EphemeralContainer", "env")["x-kubernetes-patch-merge-key"],
        "name"
    );
    let tolerations = property("PodSpec", "tolerations");
    assert_eq!(tolerations["x-kubernetes-list-type"], "atomic");
    assert!(tolerations.get("x-kubernetes-patch-strategy").is_none());
    let object_meta = schema(&document, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
    assert_eq!(
        object_meta["properties"]["finalizers"]["x-kubernetes-list-type"],
        "set"
    );
    assert_eq!(
        object_meta["properties"]["ownerReferences"]["x-kubernetes-patch-merge-key"],
        "uid"
    );
}

#[test]
fn custom_resources_get_their_crd_schema_with_standard_fields() {
    let document = document("example.com", "v1");
    let widget = schema(&document, "com.example.v1.Widget");
    assert_eq!(
        widget["x-kubernetes-group-version-kind"],
        json!([{"group": "example.com", "kind": "Widget", "version": "v1"}])
    );
    assert_eq!(widget["properties"]["spec"]["required"], json!(["color"]));
    assert_eq!(
        widget["properties"]["metadata"]["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}])
    );
    assert_eq!(widget["properties"]["apiVersion"]["type"], "string");
    assert!(schema(&document, "com.example.v1.WidgetList").is_object());
    assert!(schema(&document, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta").is_object());
    let patch =
        &document["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert_eq!(patch["operationId"], "patchExampleComV1NamespacedWidget");
    assert_eq!(patch["tags"], json!(["exampleCom_v1"]));
}

#[test]
fn kinds_without_a_schema_are_served_as_open_objects() {
    let mut odd = Resource {
        group: "apps".to_string(),
        version: "v1".to_string(),
        kind: "Gadget".to_string(),
        plural: "gadgets".to_string(),
        namespaced: false,
        subresources: vec!["status".to_string(), "unheard-of".to_string()],
        custom_schema: None,
    };
    let document = v3_document(std::slice::from_ref(&odd), "apps", "v1").expect("apps/v1");
    let gadget = schema(&document, "apps.v1.Gadget");
    assert_eq!(gadget["x-kubernetes-preserve-unknown-fields"], true);
    assert!(document["paths"]["/apis/apps/v1/gadgets/{name}/status"]["patch"].is_object());
    assert!(
        document["paths"]
            .get("/apis/apps/v1/gadgets/{name}/unheard-of")
            .is_none()
    );

    // A CRD schema that is not an object is treated as absent, not trusted.
    odd.custom_schema = Some(json!("not a schema"));
    let document = v3_document(std::slice::from_ref(&odd), "apps", "v1").expect("apps/v1");
    assert_eq!(
        schema(&document, "apps.v1.Gadget")["x-kubernetes-preserve-unknown-fields"],
        true
    );
}

#[test]
fn document_paths_parse_back_to_their_group_version() {
    for (group, version) in [("", "v1"), ("apps", "v1"), ("coordination.k8s.io", "v1")] {
        let path = group_version_path(group, version);
        assert_eq!(parse_group_version_path(&path), Some((group, version)));
    }
    for bad in [
        "",
        "api",
        "api/",
        "apis/apps",
        "apis/apps/",
        "apis//v1",
        "api/v1/x",
        "apis/a/v1/x",
        "v1",
    ] {
        assert_eq!(parse_group_version_path(bad), None, "{bad:?}");
    }
}

#[test]
fn events_group_event_is_its_own_kind() {
    let event = Resource {
        group: "events.k8s.io".to_string(),
        version: "v1".to_string(),
        kind: "Event".to_string(),
        plural: "events".to_string(),
        namespaced: true,
        subresources: Vec::new(),
        custom_schema: None,
    };
    let document = v3_document(&[event], "events.k8s.io", "v1").expect("events.k8s.io/v1");
    let schema = schema(&document, "io.k8s.api.events.v1.Event");
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        json!([{"group": "events.k8s.io", "kind": "Event", "version": "v1"}])
    );
    assert!(schema["properties"]["eventTime"].is_object());
    assert!(
        document["components"]["schemas"]
            .get("io.k8s.api.core.v1.Event")
            .is_none()
    );
}
