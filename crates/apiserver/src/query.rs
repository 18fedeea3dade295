//! A request's query parameters, as kube-apiserver reads them.

use crate::status::ApiError;

#[derive(Debug, Default, Clone)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<i64>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
    pub force: bool,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub orphan_dependents: Option<bool>,
    pub include_object: Option<String>,
}

fn boolean(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" | "" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "invalid value for {name}: {other:?} is not a boolean"
        ))),
    }
}

fn integer(name: &str, value: &str) -> Result<i64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid value for {name}: {value:?} is not an integer"
        ))
    })
}

impl Query {
    pub fn parse(text: &str) -> Result<Query, ApiError> {
        let mut query = Query::default();
        for (key, value) in form_urlencoded::parse(text.as_bytes()) {
            let value = value.into_owned();
            match key.as_ref() {
                "labelSelector" => query.label_selector = Some(value),
                "fieldSelector" => query.field_selector = Some(value),
                "limit" => query.limit = Some(integer("limit", &value)?),
                "continue" => query.continue_token = Some(value).filter(|v| !v.is_empty()),
                "resourceVersion" => query.resource_version = Some(value),
                "resourceVersionMatch" => query.resource_version_match = Some(value),
                "watch" => query.watch = boolean("watch", &value)?,
                "timeoutSeconds" => {
                    query.timeout_seconds = Some(integer("timeoutSeconds", &value)?.max(0) as u64)
                }
                "allowWatchBookmarks" => {
                    query.allow_watch_bookmarks = boolean("allowWatchBookmarks", &value)?
                }
                "sendInitialEvents" => {
                    query.send_initial_events = Some(boolean("sendInitialEvents", &value)?)
                }
                "dryRun" => {
                    if value != "All" {
                        return Err(ApiError::bad_request(format!(
                            "Invalid dry run value: {value:?}: supported values: \"All\""
                        )));
                    }
                    query.dry_run = true;
                }
                "fieldManager" => query.field_manager = Some(value),
                "fieldValidation" => {
                    if !matches!(value.as_str(), "Strict" | "Warn" | "Ignore" | "") {
                        return Err(ApiError::bad_request(format!(
                            "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {value:?}"
                        )));
                    }
                    query.field_validation = Some(value).filter(|v| !v.is_empty());
                }
                "force" => query.force = boolean("force", &value)?,
                "propagationPolicy" => query.propagation_policy = Some(value),
                "gracePeriodSeconds" => {
                    query.grace_period_seconds = Some(integer("gracePeriodSeconds", &value)?)
                }
                "orphanDependents" => {
                    query.orphan_dependents = Some(boolean("orphanDependents", &value)?)
                }
                "includeObject" => query.include_object = Some(value),
                // Accepted and ignored as kube-apiserver ignores unknown ones.
                _ => {}
            }
        }
        Ok(query)
    }

    /// How unknown and duplicate fields are treated (kube-apiserver's
    /// default, for clients that do not say, is Warn; kubectl says Strict).
    pub fn field_validation(&self) -> &str {
        self.field_validation.as_deref().unwrap_or("Warn")
    }
}
