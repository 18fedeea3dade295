//! The one error type of this crate: every message names the page, bucket or
//! record that is wrong, so a failed restore says where the file is damaged,
//! and what the writer was given that no bbolt file can hold.

/// Why a bbolt file or an etcd backend inside it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BboltError {
    /// Neither meta page holds a valid bbolt meta record.
    #[error("not a bbolt file: {0}")]
    NotBbolt(String),
    /// The file ends in an `etcdctl snapshot save` trailer that does not match.
    #[error("snapshot sha256 mismatch")]
    Sha256Mismatch,
    /// A page id points past the end of the file.
    #[error("page {pgid} is out of range (file has {n_pages} pages)")]
    PageOutOfRange { pgid: u64, n_pages: u64 },
    /// A page's header or elements are inconsistent.
    #[error("{location}: {problem}")]
    CorruptPage { location: String, problem: String },
    /// The bbolt file is sound but does not hold what etcd 3.4 writes.
    #[error("etcd backend: {0}")]
    Etcd(String),
    /// What was given to the writer cannot be a bbolt file (unsorted keys,
    /// a duplicate bucket, an element too large).
    #[error("cannot write a bbolt file: {0}")]
    Write(String),
}
