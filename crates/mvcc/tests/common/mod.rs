//! Shared fixture for the integration tests: a store on a temporary redb file, with helpers
//! that apply one operation per committed and published write transaction.

#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use mvcc::Db;
use mvcc::{Mvcc, MvccError, Writer};
use proto::etcdserverpb::{
    CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use proto::mvccpb::KeyValue;
use redb::{Durability, ReadableTableMetadata, TableDefinition, WriteTransaction};
use tempfile::TempDir;

pub struct TestStore {
    directory: TempDir,
    pub database: Arc<Db>,
    pub mvcc: Arc<Mvcc>,
}

impl TestStore {
    pub fn new() -> TestStore {
        let directory = tempfile::tempdir().expect("temporary directory");
        let database = Arc::new(
            Db::open(&directory.path().join("shoal.redb"), 16 << 20).expect("create database"),
        );
        let mvcc = Arc::new(Mvcc::open(database.clone()).expect("open mvcc"));
        TestStore {
            directory,
            database,
            mvcc,
        }
    }

    /// Closes the database and opens it again, rebuilding everything from disk.
    pub fn reopen(self) -> TestStore {
        let TestStore {
            directory,
            database,
            mvcc,
        } = self;
        // Tests commit without fsync for speed; one durable commit makes all of it persistent.
        database
            .begin_write()
            .expect("begin write")
            .commit()
            .expect("durable commit");
        drop(mvcc);
        drop(database);
        let database = Arc::new(
            Db::open(&directory.path().join("shoal.redb"), 16 << 20).expect("reopen database"),
        );
        let mvcc = Arc::new(Mvcc::open(database.clone()).expect("reopen mvcc"));
        TestStore {
            directory,
            database,
            mvcc,
        }
    }

    /// A write transaction that skips fsync; `reopen` makes the data durable first.
    pub fn begin_write(&self) -> WriteTransaction {
        let mut wtx = self.database.begin_write().expect("begin write");
        wtx.set_durability(Durability::None)
            .expect("non-durable commits are allowed");
        wtx
    }

    /// Runs `body` with a writer in a fresh write transaction, then commits and publishes.
    pub fn apply<R>(&self, body: impl FnOnce(&mut Writer<'_>) -> R) -> R {
        let wtx = self.begin_write();
        let result = {
            let mut writer = self.mvcc.writer(&wtx);
            body(&mut writer)
        };
        wtx.commit().expect("commit");
        self.mvcc.publish();
        result
    }

    pub fn put(&self, key: &str, value: &str) -> PutResponse {
        self.put_request(put_request(key, value)).expect("put")
    }

    pub fn put_request(&self, request: PutRequest) -> Result<PutResponse, MvccError> {
        self.apply(|writer| writer.put(&request))
    }

    pub fn delete(&self, key: &str, range_end: &str) -> DeleteRangeResponse {
        let request = DeleteRangeRequest {
            key: bytes(key),
            range_end: bytes(range_end),
            prev_kv: true,
        };
        self.apply(|writer| writer.delete_range(&request))
            .expect("delete")
    }

    pub fn txn(&self, request: &TxnRequest) -> Result<TxnResponse, MvccError> {
        self.apply(|writer| writer.txn(request))
    }

    pub fn compact(&self, revision: i64) -> Result<CompactionResponse, MvccError> {
        self.apply(|writer| writer.compact(revision))
    }

    /// A range, through both of mvcc's paths: the response and the response
    /// encoded straight from the records must agree byte for byte.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let response = self.mvcc.range(request);
        let encoded = self.mvcc.range_encoded(request);
        match (&response, encoded) {
            (Ok(response), Ok(encoded)) => {
                let header = response.header.unwrap_or_default();
                assert_eq!(encoded.header_revision, header.revision);
                let mut bytes = Vec::new();
                encoded.encode(&header, &mut bytes);
                assert_eq!(bytes.len(), encoded.encoded_len(&header));
                assert_eq!(
                    bytes,
                    prost::Message::encode_to_vec(response),
                    "encoded range of {request:?}"
                );
                // What the gRPC API sends: the same bytes, in pieces.
                let pieces: Vec<Vec<u8>> = encoded.into_pieces(&header).collect();
                assert!(pieces.iter().all(|piece| !piece.is_empty()));
                assert_eq!(pieces.concat(), bytes, "pieces of the range of {request:?}");
            }
            (Err(error), Err(encoded_error)) => {
                assert_eq!(error.to_string(), encoded_error.to_string());
            }
            (response, encoded) => panic!(
                "the two range paths disagree: {response:?} and {:?}",
                encoded.map(|encoded| encoded.header_revision)
            ),
        }
        response
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.get_at(key, 0).expect("get")
    }

    pub fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>, MvccError> {
        let response = self.range(&RangeRequest {
            key: bytes(key),
            revision,
            ..Default::default()
        })?;
        assert!(response.kvs.len() <= 1);
        Ok(response.kvs.into_iter().next())
    }

    /// How many revision records redb holds, to check that compaction really deletes.
    pub fn stored_record_count(&self) -> u64 {
        const REVISIONS: TableDefinition<'static, u128, &'static [u8]> =
            TableDefinition::new("mvcc_revisions");
        let read_txn = self.database.begin_read().expect("begin read");
        read_txn
            .open_table(REVISIONS)
            .expect("revisions table")
            .len()
            .expect("count")
    }

    /// Every live key with its value at `revision`, as (key, value) strings.
    pub fn all_at(&self, revision: i64) -> Result<Vec<(String, String)>, MvccError> {
        let response = self.range(&RangeRequest {
            key: bytes("\0"),
            range_end: bytes("\0"),
            revision,
            ..Default::default()
        })?;
        Ok(response
            .kvs
            .iter()
            .map(|kv| (text(&kv.key), text(&kv.value)))
            .collect())
    }
}

pub fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn put_request(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: bytes(key),
        value: bytes(value),
        ..Default::default()
    }
}

pub fn keys(response: &RangeResponse) -> Vec<String> {
    response.kvs.iter().map(|kv| text(&kv.key)).collect()
}

pub fn range_request(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: bytes(key),
        range_end: bytes(range_end),
        ..Default::default()
    }
}
