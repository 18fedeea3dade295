//! Request checks etcd makes before a request reaches raft: a bad request is
//! refused whole, with etcd's error, and nothing of it is applied.

use proto::etcdserverpb::request_op::Request;
use proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use tonic::Status;

use crate::errors;

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

pub fn range(request: &RangeRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(errors::key_not_provided());
    }
    // Unknown enum values arrive as raw integers; etcd refuses them.
    if !(0..=2).contains(&request.sort_order) || !(0..=4).contains(&request.sort_target) {
        return Err(errors::invalid_sort_option());
    }
    Ok(())
}

pub fn put(request: &PutRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(errors::key_not_provided());
    }
    if request.ignore_value && !request.value.is_empty() {
        return Err(errors::value_provided());
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(errors::lease_provided());
    }
    Ok(())
}

pub fn delete_range(request: &DeleteRangeRequest) -> Result<(), Status> {
    if request.key.is_empty() {
        return Err(errors::key_not_provided());
    }
    Ok(())
}

fn compare(compare: &Compare) -> Result<(), Status> {
    if compare.key.is_empty() {
        return Err(errors::key_not_provided());
    }
    Ok(())
}

fn request_op(op: &RequestOp) -> Result<(), Status> {
    match &op.request {
        Some(Request::RequestRange(request)) => range(request),
        Some(Request::RequestPut(request)) => put(request),
        Some(Request::RequestDeleteRange(request)) => delete_range(request),
        Some(Request::RequestTxn(request)) => txn_ops(request),
        None => Ok(()),
    }
}

fn txn_ops(request: &TxnRequest) -> Result<(), Status> {
    if request.compare.len() > MAX_TXN_OPS
        || request.success.len() > MAX_TXN_OPS
        || request.failure.len() > MAX_TXN_OPS
    {
        return Err(errors::too_many_ops());
    }
    request.compare.iter().try_for_each(compare)?;
    request.success.iter().try_for_each(request_op)?;
    request.failure.iter().try_for_each(request_op)
}

/// A txn may not write one key twice, nor put a key that it also deletes, on any
/// path that can run together (a nested txn's success and failure branches
/// exclude each other, so they may both put the same key).
pub fn txn(request: &TxnRequest) -> Result<(), Status> {
    txn_ops(request)?;
    check_intervals(&request.success)?;
    check_intervals(&request.failure)?;
    Ok(())
}

/// A half-open key interval; `end == None` means "to the end of the key space".
#[derive(Clone)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn of_delete(key: &[u8], range_end: &[u8]) -> Interval {
        if range_end.is_empty() {
            let mut end = key.to_vec();
            end.push(0);
            Interval {
                start: key.to_vec(),
                end: Some(end),
            }
        } else if range_end == [0] {
            Interval {
                start: key.to_vec(),
                end: None,
            }
        } else {
            Interval {
                start: key.to_vec(),
                end: Some(range_end.to_vec()),
            }
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_ref().is_none_or(|end| key < end.as_slice())
    }
}

type PutKeys = std::collections::HashSet<Vec<u8>>;

fn check_intervals(ops: &[RequestOp]) -> Result<(PutKeys, Vec<Interval>), Status> {
    let mut deletes: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(delete)) => {
                Some(Interval::of_delete(&delete.key, &delete.range_end))
            }
            _ => None,
        })
        .collect();
    let mut puts = PutKeys::new();
    for op in ops {
        let Some(Request::RequestTxn(inner)) = &op.request else {
            continue;
        };
        let (puts_then, deletes_then) = check_intervals(&inner.success)?;
        let (puts_else, deletes_else) = check_intervals(&inner.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deletes.iter().any(|interval| interval.contains(key)) {
                return Err(errors::duplicate_key());
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            let clashes_with_put = puts.contains(key) && !puts_then.contains(key);
            if clashes_with_put || deletes.iter().any(|interval| interval.contains(key)) {
                return Err(errors::duplicate_key());
            }
            puts.insert(key.clone());
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        let key = put.key.to_vec();
        if puts.contains(&key) || deletes.iter().any(|interval| interval.contains(&key)) {
            return Err(errors::duplicate_key());
        }
        puts.insert(key);
    }
    Ok((puts, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put_op(key: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::from(key.to_string()),
                ..Default::default()
            })),
        }
    }

    fn delete_op(key: &str, range_end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::from(key.to_string()),
                range_end: Bytes::from(range_end.to_string()),
                ..Default::default()
            })),
        }
    }

    fn txn_of(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    fn message(result: Result<(), Status>) -> String {
        result
            .err()
            .map(|status| status.message().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn duplicate_puts_are_refused() {
        let request = txn_of(vec![put_op("a"), put_op("a")], vec![]);
        assert_eq!(
            message(txn(&request)),
            "etcdserver: duplicate key given in txn request"
        );
    }

    #[test]
    fn put_inside_a_deleted_range_is_refused() {
        let request = txn_of(vec![delete_op("a", "c"), put_op("b")], vec![]);
        assert!(txn(&request).is_err());
        let request = txn_of(vec![delete_op("a", "c"), put_op("c")], vec![]);
        assert!(txn(&request).is_ok());
    }

    #[test]
    fn exclusive_branches_of_a_nested_txn_may_put_the_same_key() {
        let nested = RequestOp {
            request: Some(Request::RequestTxn(txn_of(
                vec![put_op("k")],
                vec![put_op("k")],
            ))),
        };
        assert!(txn(&txn_of(vec![nested.clone()], vec![])).is_ok());
        assert!(txn(&txn_of(vec![nested, put_op("k")], vec![])).is_err());
    }

    #[test]
    fn success_and_failure_are_checked_separately() {
        assert!(txn(&txn_of(vec![put_op("a")], vec![put_op("a")])).is_ok());
    }

    #[test]
    fn too_many_operations() {
        let ops: Vec<RequestOp> = (0..=MAX_TXN_OPS)
            .map(|n| put_op(&format!("k{n}")))
            .collect();
        assert_eq!(
            message(txn(&txn_of(ops, vec![]))),
            "etcdserver: too many operations in txn request"
        );
    }

    #[test]
    fn empty_keys_and_conflicting_flags() {
        assert_eq!(
            message(put(&PutRequest::default())),
            "etcdserver: key is not provided"
        );
        let request = PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(message(put(&request)), "etcdserver: value is provided");
        let request = RangeRequest {
            key: Bytes::from_static(b"k"),
            sort_order: 9,
            ..Default::default()
        };
        assert_eq!(message(range(&request)), "etcdserver: invalid sort option");
    }
}
