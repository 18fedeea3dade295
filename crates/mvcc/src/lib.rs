//! etcd MVCC data model on redb.
