//! Objects in the store: keys under `/registry/`, values as JSON, each
//! object's resourceVersion its key's `mod_revision`. Creates and updates
//! are transactions compared on the key's revision, so a write based on a
//! stale read changes nothing.

use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::request_op::Request as Op;
use proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use serde_json::Value;

use crate::objects;
use crate::status::ApiError;

/// An object read from the store.
#[derive(Debug, Clone)]
pub struct Stored {
    pub key: String,
    pub object: Value,
    pub mod_revision: i64,
}

/// What a conditional write found.
pub enum Written {
    /// Done, at this revision.
    Done(i64),
    /// The key was not as expected (exists on create; changed or gone on update).
    Lost,
}

pub async fn get(kv: &dyn client::Kv, key: &str) -> Result<Option<Stored>, ApiError> {
    let response = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await?;
    Ok(response.kvs.first().and_then(|found| {
        objects::from_stored(&found.value, found.mod_revision).map(|object| Stored {
            key: key.to_string(),
            object,
            mod_revision: found.mod_revision,
        })
    }))
}

/// Every object under `prefix` at `revision` (0: now), with the revision read at.
pub async fn list(
    kv: &dyn client::Kv,
    prefix: &str,
    revision: i64,
    serializable: bool,
) -> Result<(Vec<Stored>, i64), ApiError> {
    let end = client::prefix_end(prefix.as_bytes());
    let page = page(kv, prefix.as_bytes(), &end, revision, 0, serializable).await?;
    Ok((page.objects, page.revision))
}

/// One read of a key range.
pub struct Page {
    pub objects: Vec<Stored>,
    /// The revision the page was read at.
    pub revision: i64,
    /// Keys were left out by the limit.
    pub more: bool,
}

/// The objects in `[start, end)` at `revision` (0: now), at most `limit`
/// of them (0: all).
pub async fn page(
    kv: &dyn client::Kv,
    start: &[u8],
    end: &[u8],
    revision: i64,
    limit: i64,
    serializable: bool,
) -> Result<Page, ApiError> {
    let response = kv
        .range(RangeRequest {
            key: start.to_vec().into(),
            range_end: end.to_vec().into(),
            revision,
            limit,
            serializable,
            ..Default::default()
        })
        .await?;
    let header_revision = response.header.map_or(0, |header| header.revision);
    let objects = response
        .kvs
        .iter()
        .filter_map(|found| {
            let object = objects::from_stored(&found.value, found.mod_revision)?;
            Some(Stored {
                key: String::from_utf8_lossy(&found.key).into_owned(),
                object,
                mod_revision: found.mod_revision,
            })
        })
        .collect();
    Ok(Page {
        objects,
        revision: if revision > 0 {
            revision
        } else {
            header_revision
        },
        more: response.more,
    })
}

fn compare_mod_revision(key: &str, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.as_bytes().to_vec().into(),
        target_union: Some(TargetUnion::ModRevision(revision)),
        ..Default::default()
    }
}

/// Runs `operation` on `key` if the key's mod_revision is `expected`.
async fn if_unchanged(
    kv: &dyn client::Kv,
    key: &str,
    expected: i64,
    operation: Op,
) -> Result<Written, ApiError> {
    let response = kv
        .txn(TxnRequest {
            compare: vec![compare_mod_revision(key, expected)],
            success: vec![RequestOp {
                request: Some(operation),
            }],
            failure: vec![],
        })
        .await?;
    let revision = response.header.map_or(0, |header| header.revision);
    Ok(if response.succeeded {
        Written::Done(revision)
    } else {
        Written::Lost
    })
}

/// Writes `object` at `key` if the key's mod_revision is `expected` (0: the
/// key must not exist).
pub async fn put_if(
    kv: &dyn client::Kv,
    key: &str,
    object: &Value,
    expected: i64,
) -> Result<Written, ApiError> {
    let put = Op::RequestPut(PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: objects::to_stored(object).into(),
        ..Default::default()
    });
    if_unchanged(kv, key, expected, put).await
}

/// Deletes `key` if its mod_revision is still `expected`.
pub async fn delete_if(kv: &dyn client::Kv, key: &str, expected: i64) -> Result<Written, ApiError> {
    let delete = Op::RequestDeleteRange(DeleteRangeRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    });
    if_unchanged(kv, key, expected, delete).await
}
