//! A small, safe reader and writer of bbolt database files, and etcd 3.4's
//! backend layout on top of them: the migration path from an `etcdctl
//! snapshot save` file to shoal, and the snapshot file shoal hands etcd's
//! tools.
//!
//! `Db` parses the meta pages and walks bucket B+trees straight out of a byte
//! slice, checking every offset it follows; `read_etcd_backend` turns etcd's
//! `key`, `meta` and `lease` buckets into plain values. `write_db` lays out a
//! whole file of top-level buckets; `write_etcd_snapshot` fills it as etcd
//! 3.4 does. Nothing here does I/O.

mod db;
#[cfg(test)]
mod db_tests;
mod error;
mod etcd;
mod page;
#[cfg(test)]
mod test_pages;
mod writer;
#[cfg(test)]
mod writer_tests;

pub use db::{Bucket, Db, Iter, Meta, Value, is_bbolt};
pub use error::BboltError;
pub use etcd::{
    EtcdAuth, EtcdBackend, EtcdCluster, EtcdMember, StoredRevision, read_etcd_auth,
    read_etcd_backend, write_etcd_backend, write_etcd_snapshot,
};
pub use writer::{BucketContents, DEFAULT_PAGE_SIZE, write_db};
