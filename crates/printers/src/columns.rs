//! Column definitions shared by the printers, with the descriptions that
//! kube-apiserver takes from the API's Swagger documentation.

use crate::Column;

/// `metav1.ObjectMeta` documentation of `name`.
pub(crate) const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta` documentation of `creationTimestamp`.
pub(crate) const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

pub(crate) const CONTAINERS_DESCRIPTION: &str = "Names of each container in the template.";
pub(crate) const IMAGES_DESCRIPTION: &str = "Images referenced by each container in the template.";

pub(crate) fn column(name: &str, column_type: &str, priority: i32, description: &str) -> Column {
    Column {
        name: name.to_string(),
        column_type: column_type.to_string(),
        format: String::new(),
        description: description.to_string(),
        priority,
    }
}

/// The leading Name column (`format: name`).
pub(crate) fn name_column() -> Column {
    Column {
        format: "name".to_string(),
        ..column("Name", "string", 0, NAME_DESCRIPTION)
    }
}

/// The Age column of the built-in printers (typed "string": the cell is already human-readable).
pub(crate) fn age_column() -> Column {
    column("Age", "string", 0, CREATION_TIMESTAMP_DESCRIPTION)
}

/// A priority-0 string column.
pub(crate) fn text(name: &str, description: &str) -> Column {
    column(name, "string", 0, description)
}

/// A priority-0 integer column.
pub(crate) fn integer(name: &str, description: &str) -> Column {
    column(name, "integer", 0, description)
}

/// A wide-only (priority 1) string column.
pub(crate) fn wide(name: &str, description: &str) -> Column {
    column(name, "string", 1, description)
}
