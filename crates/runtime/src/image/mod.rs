//! Images: the content store, importing, and the OCI formats they come in.

pub mod import;
pub mod oci;
pub mod reference;
pub mod store;
