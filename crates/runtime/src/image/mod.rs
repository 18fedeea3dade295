//! Images: the content store, importing, fetching from registries, and the
//! OCI formats they come in.

pub mod fetch;
pub mod import;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod store;
pub mod zstd;
