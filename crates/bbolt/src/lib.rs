//! A small, read-only, safe reader of bbolt database files, and a decoder of
//! etcd 3.4's backend layout on top of it: the migration path from an
//! `etcdctl snapshot save` file to shoal.
//!
//! `Db` parses the meta pages and walks bucket B+trees straight out of a byte
//! slice, checking every offset it follows; `read_etcd_backend` turns etcd's
//! `key`, `meta` and `lease` buckets into plain values. Nothing here writes.

mod db;
#[cfg(test)]
mod db_tests;
mod error;
mod etcd;
mod page;
#[cfg(test)]
mod test_pages;

pub use db::{Bucket, Db, Iter, Meta, Value, is_bbolt};
pub use error::BboltError;
pub use etcd::{EtcdBackend, StoredRevision, read_etcd_backend};
