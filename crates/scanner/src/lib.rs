//! shoal's image scanner (Clair's role). The indexer (`index`, `layer`,
//! `packages`) reads an image's layers from the runtime's content store and
//! lists the OS and its packages, each with the layer that introduced it.
//! No printing, no network: the binary does both.

pub mod apk_version;
pub mod index;
pub mod layer;
pub mod matcher;
pub mod packages;
pub mod policy;
pub mod record;
pub mod report;
pub mod rpm_version;
pub mod rpmdb;
pub mod severity;
pub mod version;
pub mod vulndb;
