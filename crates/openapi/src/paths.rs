//! `paths` of one group-version document: the REST operations of each served
//! resource and subresource, with the `x-kubernetes-action` and
//! `x-kubernetes-group-version-kind` extensions and the query parameters
//! kubectl looks for (`fieldValidation` on PATCH tells it the server validates).

use serde_json::{Map, Value, json};

use crate::Resource;
use crate::registry::names;
use crate::schemas::{kind_schema_name, list_schema_name, schema_ref};

/// The media types a built-in object can be read and written in.
const OBJECT_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];

/// The media types of a list or watch response.
const LIST_MEDIA_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];

/// The patch media types: apply, JSON patch, merge patch, strategic merge patch.
const PATCH_MEDIA_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// The name operation IDs and tags use for a group: the Go package's name for
/// built-in groups (`coordination.k8s.io` is `Coordination`), every label
/// capitalized for others (`stable.example.com` is `StableExampleCom`).
fn group_identifier(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_string();
    }
    let labels: Vec<&str> = match group.strip_suffix(".k8s.io") {
        Some(first) if !first.contains('.') => vec![first],
        _ => group.split('.').collect(),
    };
    labels
        .iter()
        .flat_map(|label| label.split('-'))
        .map(capitalize)
        .collect()
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The tag of a group-version's operations (`apps_v1`, `core_v1`).
fn tag(group: &str, version: &str) -> String {
    let identifier = group_identifier(group);
    let mut chars = identifier.chars();
    let lowered: String = match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{lowered}_{version}")
}

fn query_parameter(name: &str, kind: &str, description: &str) -> Value {
    json!({
        "description": description,
        "in": "query",
        "name": name,
        "schema": { "type": kind, "uniqueItems": true },
    })
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({
        "description": description,
        "in": "path",
        "name": name,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn pretty() -> Value {
    query_parameter(
        "pretty",
        "string",
        "If 'true', the output is indented for reading.",
    )
}

fn dry_run() -> Value {
    query_parameter(
        "dryRun",
        "string",
        "When present, the request is checked and answered but nothing is stored. The only valid value is All.",
    )
}

fn field_manager() -> Value {
    query_parameter(
        "fieldManager",
        "string",
        "The name of the actor making the change, recorded in managedFields. At most 128 printable characters.",
    )
}

fn field_validation() -> Value {
    query_parameter(
        "fieldValidation",
        "string",
        "What the server does with unknown or duplicate fields in the body: Ignore drops them, Warn drops them and answers with a Warning header for each, Strict fails the request.",
    )
}

fn list_parameters() -> Vec<Value> {
    vec![
        query_parameter(
            "allowWatchBookmarks",
            "boolean",
            "With watch, asks for BOOKMARK events, which carry only a resourceVersion.",
        ),
        query_parameter(
            "continue",
            "string",
            "The continue token of the previous page of a paged list.",
        ),
        query_parameter(
            "fieldSelector",
            "string",
            "Only objects whose fields match this selector. Defaults to everything.",
        ),
        query_parameter(
            "labelSelector",
            "string",
            "Only objects whose labels match this selector. Defaults to everything.",
        ),
        query_parameter(
            "limit",
            "integer",
            "The most objects one page of a list holds; the rest is reached with the continue token.",
        ),
        query_parameter(
            "resourceVersion",
            "string",
            "Constrains which resource versions the list or watch may be served from.",
        ),
        query_parameter(
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies: Exact or NotOlderThan.",
        ),
        query_parameter(
            "sendInitialEvents",
            "boolean",
            "With watch, starts the stream with an ADDED event for every matching object, then a BOOKMARK marking the end of them.",
        ),
        query_parameter(
            "timeoutSeconds",
            "integer",
            "How long the list or watch may last, whatever its activity.",
        ),
        query_parameter(
            "watch",
            "boolean",
            "Streams changes (added, modified, deleted) instead of returning a list.",
        ),
    ]
}

fn delete_parameters() -> Vec<Value> {
    vec![
        dry_run(),
        query_parameter(
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted; zero deletes at once.",
        ),
        query_parameter(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            "Deletes an object that cannot be read from storage. Unsafe; only for repairs.",
        ),
        query_parameter(
            "orphanDependents",
            "boolean",
            "Deprecated, use propagationPolicy: whether dependents are left behind.",
        ),
        query_parameter(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection deletes dependents: Orphan, Background or Foreground.",
        ),
    ]
}

fn content(media_types: &[&str], schema: &Value) -> Value {
    let content: Map<String, Value> = media_types
        .iter()
        .map(|media_type| (media_type.to_string(), json!({ "schema": schema })))
        .collect();
    Value::Object(content)
}

fn response(description: &str, media_types: &[&str], schema: &Value) -> Value {
    json!({ "content": content(media_types, schema), "description": description })
}

fn unauthorized() -> Value {
    json!({ "description": "Unauthorized" })
}

/// The group, version and kind an operation acts on.
#[derive(Clone)]
struct Gvk {
    group: String,
    version: String,
    kind: String,
}

impl Gvk {
    fn new(group: &str, version: &str, kind: &str) -> Gvk {
        Gvk {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        }
    }

    fn extension(&self) -> Value {
        json!({ "group": self.group, "kind": self.kind, "version": self.version })
    }
}

/// One operation before it is written out.
struct Operation {
    action: &'static str,
    operation_id: String,
    description: String,
    gvk: Gvk,
    parameters: Vec<Value>,
    request_body: Option<Value>,
    responses: Value,
}

impl Operation {
    fn into_value(self, tag: &str) -> Value {
        let mut operation = Map::new();
        operation.insert("description".to_string(), json!(self.description));
        operation.insert("operationId".to_string(), json!(self.operation_id));
        if !self.parameters.is_empty() {
            operation.insert("parameters".to_string(), Value::Array(self.parameters));
        }
        if let Some(request_body) = self.request_body {
            operation.insert("requestBody".to_string(), request_body);
        }
        operation.insert("responses".to_string(), self.responses);
        operation.insert("tags".to_string(), json!([tag]));
        operation.insert("x-kubernetes-action".to_string(), json!(self.action));
        operation.insert(
            "x-kubernetes-group-version-kind".to_string(),
            self.gvk.extension(),
        );
        Value::Object(operation)
    }
}

fn body(schema: &Value) -> Value {
    json!({ "content": content(&["*/*"], schema), "required": true })
}

/// Builds the path items of one group-version.
struct PathsBuilder {
    tag: String,
    /// `Apps` + `V1`, the middle of every operation ID.
    id_infix: String,
    paths: Map<String, Value>,
}

impl PathsBuilder {
    fn add(&mut self, path: &str, method: &str, operation: Operation, path_parameters: Vec<Value>) {
        let item = self
            .paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(item) = item.as_object_mut() {
            item.insert(method.to_string(), operation.into_value(&self.tag));
            let mut parameters = path_parameters;
            parameters.push(pretty());
            item.insert("parameters".to_string(), Value::Array(parameters));
        }
    }
}

/// The path items of every operation on `resources` (all of one group-version).
pub(crate) fn paths(resources: &[&Resource], group: &str, version: &str) -> Map<String, Value> {
    let mut builder = PathsBuilder {
        tag: tag(group, version),
        id_infix: format!("{}{}", group_identifier(group), capitalize(version)),
        paths: Map::new(),
    };
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    builder.paths.insert(
        format!("{prefix}/"),
        json!({
            "get": {
                "description": "get available resources",
                "operationId": format!("get{}APIResources", builder.id_infix),
                "responses": {
                    "200": response("OK", &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"], &schema_ref(names::API_RESOURCE_LIST)),
                    "401": unauthorized(),
                },
                "tags": [builder.tag.clone()],
            }
        }),
    );
    for resource in resources {
        add_resource(&mut builder, &prefix, resource);
    }
    builder.paths
}

fn add_resource(builder: &mut PathsBuilder, prefix: &str, resource: &Resource) {
    let kind = resource.kind.as_str();
    let resource_gvk = Gvk::new(&resource.group, &resource.version, kind);
    let gvk = || resource_gvk.clone();
    let object = schema_ref(&kind_schema_name(resource));
    let list = schema_ref(&list_schema_name(resource));
    let status = schema_ref(names::STATUS);
    let is_custom = resource.custom_schema.is_some();
    let patch_media_types: Vec<&str> = PATCH_MEDIA_TYPES
        .iter()
        .copied()
        // Custom resources take no strategic merge patch.
        .filter(|media_type| !(is_custom && media_type.contains("strategic")))
        .collect();
    let patch_body = json!({
        "content": content(&patch_media_types, &schema_ref(names::PATCH)),
        "required": true,
    });

    let (scope, namespace_parameters) = if resource.namespaced {
        (
            "Namespaced",
            vec![path_parameter(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            )],
        )
    } else {
        ("", Vec::new())
    };
    let namespace_segment = if resource.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection_path = format!("{prefix}{namespace_segment}/{}", resource.plural);
    let item_path = format!("{collection_path}/{{name}}");
    let infix = builder.id_infix.clone();
    let id = |verb: &str, suffix: &str| format!("{verb}{infix}{scope}{kind}{suffix}");
    let mut item_parameters = vec![path_parameter("name", &format!("name of the {kind}"))];
    item_parameters.extend(namespace_parameters.iter().cloned());

    let write_parameters = vec![dry_run(), field_manager(), field_validation()];
    let mut patch_parameters = write_parameters.clone();
    patch_parameters.push(query_parameter(
        "force",
        "boolean",
        "Takes ownership of conflicting fields in an apply patch. Only for apply patches.",
    ));

    // The collection: list (and watch), create, delete a collection.
    builder.add(
        &collection_path,
        "get",
        Operation {
            action: "list",
            operation_id: id("list", ""),
            description: format!("list or watch objects of kind {kind}"),
            gvk: gvk(),
            parameters: list_parameters(),
            request_body: None,
            responses: json!({ "200": response("OK", LIST_MEDIA_TYPES, &list), "401": unauthorized() }),
        },
        namespace_parameters.clone(),
    );
    builder.add(
        &collection_path,
        "post",
        Operation {
            action: "post",
            operation_id: id("create", ""),
            description: format!("create a {kind}"),
            gvk: gvk(),
            parameters: write_parameters.clone(),
            request_body: Some(body(&object)),
            responses: json!({
                "200": response("OK", OBJECT_MEDIA_TYPES, &object),
                "201": response("Created", OBJECT_MEDIA_TYPES, &object),
                "202": response("Accepted", OBJECT_MEDIA_TYPES, &object),
                "401": unauthorized(),
            }),
        },
        namespace_parameters.clone(),
    );
    let mut delete_collection_parameters = delete_parameters();
    delete_collection_parameters.extend(list_parameters());
    delete_collection_parameters.retain(|parameter| {
        !matches!(
            parameter.get("name").and_then(Value::as_str),
            Some("allowWatchBookmarks" | "watch")
        )
    });
    builder.add(
        &collection_path,
        "delete",
        Operation {
            action: "deletecollection",
            operation_id: id("deleteCollection", ""),
            description: format!("delete collection of {kind}"),
            gvk: gvk(),
            parameters: delete_collection_parameters,
            request_body: Some(json!({ "content": content(&["*/*"], &schema_ref(names::DELETE_OPTIONS)) })),
            responses: json!({ "200": response("OK", OBJECT_MEDIA_TYPES, &status), "401": unauthorized() }),
        },
        namespace_parameters.clone(),
    );
    if resource.namespaced {
        builder.add(
            &format!("{prefix}/{}", resource.plural),
            "get",
            Operation {
                action: "list",
                operation_id: format!("list{infix}{kind}ForAllNamespaces"),
                description: format!("list or watch objects of kind {kind}"),
                gvk: gvk(),
                parameters: list_parameters(),
                request_body: None,
                responses: json!({ "200": response("OK", LIST_MEDIA_TYPES, &list), "401": unauthorized() }),
            },
            Vec::new(),
        );
    }

    // One object: read, replace, patch, delete.
    add_object_operations(
        builder,
        ObjectOperations {
            path: &item_path,
            ids: [id("read", ""), id("replace", ""), id("patch", "")],
            what: format!("the specified {kind}"),
            gvk: resource_gvk.clone(),
            object: &object,
            write_parameters: &write_parameters,
            patch_parameters: &patch_parameters,
            patch_body: &patch_body,
            path_parameters: &item_parameters,
        },
    );
    builder.add(
        &item_path,
        "delete",
        Operation {
            action: "delete",
            operation_id: id("delete", ""),
            description: format!("delete a {kind}"),
            gvk: gvk(),
            parameters: delete_parameters(),
            request_body: Some(
                json!({ "content": content(&["*/*"], &schema_ref(names::DELETE_OPTIONS)) }),
            ),
            responses: json!({
                "200": response("OK", OBJECT_MEDIA_TYPES, &status),
                "202": response("Accepted", OBJECT_MEDIA_TYPES, &status),
                "401": unauthorized(),
            }),
        },
        item_parameters.clone(),
    );

    for subresource in &resource.subresources {
        let sub_path = format!("{item_path}/{subresource}");
        match subresource.as_str() {
            "status" => add_object_operations(
                builder,
                ObjectOperations {
                    path: &sub_path,
                    ids: [
                        id("read", "Status"),
                        id("replace", "Status"),
                        id("patch", "Status"),
                    ],
                    what: format!("status of the specified {kind}"),
                    gvk: resource_gvk.clone(),
                    object: &object,
                    write_parameters: &write_parameters,
                    patch_parameters: &patch_parameters,
                    patch_body: &patch_body,
                    path_parameters: &item_parameters,
                },
            ),
            "scale" => add_object_operations(
                builder,
                ObjectOperations {
                    path: &sub_path,
                    ids: [
                        id("read", "Scale"),
                        id("replace", "Scale"),
                        id("patch", "Scale"),
                    ],
                    what: format!("scale of the specified {kind}"),
                    gvk: Gvk::new("autoscaling", "v1", "Scale"),
                    object: &schema_ref("io.k8s.api.autoscaling.v1.Scale"),
                    write_parameters: &write_parameters,
                    patch_parameters: &patch_parameters,
                    patch_body: &patch_body,
                    path_parameters: &item_parameters,
                },
            ),
            "binding" | "eviction" => {
                let (carried_group, carried_kind, carried_schema) = if subresource == "binding" {
                    ("", "Binding", "io.k8s.api.core.v1.Binding")
                } else {
                    ("policy", "Eviction", "io.k8s.api.policy.v1.Eviction")
                };
                let carried = schema_ref(carried_schema);
                builder.add(
                    &sub_path,
                    "post",
                    Operation {
                        action: "post",
                        operation_id: id("create", carried_kind),
                        description: format!("create {subresource} of a {kind}"),
                        gvk: Gvk::new(carried_group, "v1", carried_kind),
                        parameters: write_parameters.clone(),
                        request_body: Some(body(&carried)),
                        responses: json!({
                            "200": response("OK", OBJECT_MEDIA_TYPES, &carried),
                            "201": response("Created", OBJECT_MEDIA_TYPES, &carried),
                            "202": response("Accepted", OBJECT_MEDIA_TYPES, &carried),
                            "401": unauthorized(),
                        }),
                    },
                    item_parameters.clone(),
                );
            }
            "log" => {
                builder.add(
                    &sub_path,
                    "get",
                    Operation {
                        action: "get",
                        operation_id: id("read", "Log"),
                        description: format!("read log of the specified {kind}"),
                        gvk: gvk(),
                        parameters: log_parameters(),
                        request_body: None,
                        responses: json!({
                            "200": response("OK", &["text/plain", "application/json", "application/yaml", "application/vnd.kubernetes.protobuf"], &json!({ "type": "string" })),
                            "401": unauthorized(),
                        }),
                    },
                    item_parameters.clone(),
                );
            }
            "exec" | "attach" => {
                let options_kind = if subresource == "exec" {
                    "PodExecOptions"
                } else {
                    "PodAttachOptions"
                };
                let suffix = capitalize(subresource);
                for (method, verb) in [("get", "connectGet"), ("post", "connectPost")] {
                    builder.add(
                        &sub_path,
                        method,
                        Operation {
                            action: "connect",
                            operation_id: id(verb, &suffix),
                            description: format!(
                                "connect {method} requests to {subresource} of {kind}"
                            ),
                            gvk: Gvk::new(&resource.group, &resource.version, options_kind),
                            parameters: connect_parameters(subresource == "exec"),
                            request_body: None,
                            responses: json!({
                                "200": response("OK", &["*/*"], &json!({ "type": "string" })),
                                "401": unauthorized(),
                            }),
                        },
                        item_parameters.clone(),
                    );
                }
            }
            _ => {}
        }
    }
}

/// What read, replace and patch of one object (or one of its subresources) need.
struct ObjectOperations<'a> {
    path: &'a str,
    /// The operation IDs of read, replace and patch.
    ids: [String; 3],
    what: String,
    gvk: Gvk,
    object: &'a Value,
    write_parameters: &'a [Value],
    patch_parameters: &'a [Value],
    patch_body: &'a Value,
    path_parameters: &'a [Value],
}

fn add_object_operations(builder: &mut PathsBuilder, operations: ObjectOperations<'_>) {
    let ObjectOperations {
        path,
        ids: [read_id, replace_id, patch_id],
        what,
        gvk,
        object,
        write_parameters,
        patch_parameters,
        patch_body,
        path_parameters,
    } = operations;
    builder.add(
        path,
        "get",
        Operation {
            action: "get",
            operation_id: read_id,
            description: format!("read {what}"),
            gvk: gvk.clone(),
            parameters: Vec::new(),
            request_body: None,
            responses: json!({ "200": response("OK", OBJECT_MEDIA_TYPES, object), "401": unauthorized() }),
        },
        path_parameters.to_vec(),
    );
    builder.add(
        path,
        "put",
        Operation {
            action: "put",
            operation_id: replace_id,
            description: format!("replace {what}"),
            gvk: gvk.clone(),
            parameters: write_parameters.to_vec(),
            request_body: Some(body(object)),
            responses: json!({
                "200": response("OK", OBJECT_MEDIA_TYPES, object),
                "201": response("Created", OBJECT_MEDIA_TYPES, object),
                "401": unauthorized(),
            }),
        },
        path_parameters.to_vec(),
    );
    builder.add(
        path,
        "patch",
        Operation {
            action: "patch",
            operation_id: patch_id,
            description: format!("partially update {what}"),
            gvk,
            parameters: patch_parameters.to_vec(),
            request_body: Some(patch_body.clone()),
            responses: json!({
                "200": response("OK", OBJECT_MEDIA_TYPES, object),
                "201": response("Created", OBJECT_MEDIA_TYPES, object),
                "401": unauthorized(),
            }),
        },
        path_parameters.to_vec(),
    );
}

fn log_parameters() -> Vec<Value> {
    vec![
        query_parameter(
            "container",
            "string",
            "The container whose log is read; may be omitted when the pod has one container.",
        ),
        query_parameter("follow", "boolean", "Streams the log as it grows."),
        query_parameter(
            "insecureSkipTLSVerifyBackend",
            "boolean",
            "Skips verifying the kubelet's serving certificate.",
        ),
        query_parameter("limitBytes", "integer", "The most bytes of log returned."),
        query_parameter(
            "previous",
            "boolean",
            "Reads the log of the container's previous, terminated instance.",
        ),
        query_parameter(
            "sinceSeconds",
            "integer",
            "Only lines newer than this many seconds.",
        ),
        query_parameter(
            "stream",
            "string",
            "Which stream to read: All, Stdout or Stderr.",
        ),
        query_parameter(
            "tailLines",
            "integer",
            "Only this many lines from the end of the log.",
        ),
        query_parameter(
            "timestamps",
            "boolean",
            "Prefixes every line with its RFC3339 timestamp.",
        ),
    ]
}

fn connect_parameters(exec: bool) -> Vec<Value> {
    let mut parameters = Vec::new();
    if exec {
        parameters.push(query_parameter(
            "command",
            "string",
            "The command to run, one argument per parameter.",
        ));
    }
    parameters.extend([
        query_parameter(
            "container",
            "string",
            "The container to connect to; may be omitted when the pod has one container.",
        ),
        query_parameter(
            "stderr",
            "boolean",
            "Redirects the container's standard error.",
        ),
        query_parameter(
            "stdin",
            "boolean",
            "Redirects the container's standard input.",
        ),
        query_parameter(
            "stdout",
            "boolean",
            "Redirects the container's standard output.",
        ),
        query_parameter(
            "tty",
            "boolean",
            "Allocates a terminal; standard error is then merged into standard output.",
        ),
    ]);
    parameters
}
