//! The KV workloads: put, range, txn-put and txn-mixed, with the etcd
//! benchmark tool's flags and defaults.

use std::time::Instant;

use bytes::Bytes;
use clap::Args;
use proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest, request_op};

use crate::Consistency;
use crate::connect::{Connections, call_error};
use crate::keys::{self, KeySpace};
use crate::report::{Section, Summary};
use crate::runner::{self, Plan};

#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    /// Total number of put requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Key size of each put request.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of each put request.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Maximum possible keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use sequential keys instead of random ones.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Maximum puts per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

#[derive(Args, Debug, Clone)]
pub struct RangeArgs {
    /// The key to read, or the start of the range.
    pub key: String,
    /// The end of the range (exclusive).
    pub range_end: Option<String>,
    /// Read every key that starts with KEY (every key when KEY is empty).
    #[arg(long, conflicts_with = "range_end")]
    pub prefix: bool,
    /// Total number of range requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Linearizable (l) or serializable (s).
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// Maximum keys per range (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Only count the keys.
    #[arg(long)]
    pub count_only: bool,
    /// Maximum ranges per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

#[derive(Args, Debug, Clone)]
pub struct TxnPutArgs {
    /// Total number of txn requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Number of puts per txn.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: u64,
    /// Key size of each put.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of each put.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Maximum possible keys.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Maximum txns per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

#[derive(Args, Debug, Clone)]
pub struct TxnMixedArgs {
    /// The start of the range each read covers.
    pub key: String,
    /// The end of the range each read covers (default: every key from KEY on).
    pub range_end: Option<String>,
    /// Total number of txn requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Read/write ratio: reads per write.
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    /// Linearizable (l) or serializable (s) reads.
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// Maximum keys each read returns.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// Key size of each put.
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of each put.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Maximum possible keys (all are written before the run).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Maximum txns per second (0 is no limit).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

pub async fn put(connections: &Connections, args: &PutArgs) -> anyhow::Result<Summary> {
    let key_space = KeySpace {
        key_size: args.key_size,
        key_space_size: args.key_space_size,
        sequential: args.sequential_keys,
    };
    key_space.check()?;
    let value = keys::random_value(args.val_size);
    let plan = Plan {
        label: "put".into(),
        total: args.total,
        rate: args.rate,
        n_classes: 1,
    };
    let (recorders, duration) = runner::run(
        plan,
        connections.kv_connections(),
        move |kv, request_idx| {
            let request = PutRequest {
                key: key_space.key(request_idx),
                value: value.clone(),
                ..Default::default()
            };
            Box::pin(async move { kv.put(request).await.map(|_| 0) })
        },
    )
    .await;
    let [recorder] = <[_; 1]>::try_from(recorders).expect("one class");
    Ok(Summary::new("put").section(Section::new("put", recorder, duration)))
}

pub async fn range(connections: &Connections, args: &RangeArgs) -> anyhow::Result<Summary> {
    let key = if args.prefix && args.key.is_empty() {
        // etcd reads every key as the range ["\0", "\0"), as `etcdctl get "" --prefix` does.
        Bytes::from_static(b"\0")
    } else {
        Bytes::from(args.key.clone().into_bytes())
    };
    let range_end = match (&args.range_end, args.prefix) {
        (Some(end), _) => Bytes::from(end.clone().into_bytes()),
        (None, true) => prefix_end(args.key.as_bytes()),
        (None, false) => Bytes::new(),
    };
    let request = RangeRequest {
        key,
        range_end,
        limit: args.limit,
        serializable: args.consistency == Consistency::Serializable,
        count_only: args.count_only,
        ..Default::default()
    };
    // One range before the run reports how much each request reads, and fails
    // early and clearly when the server cannot serve it.
    let started = Instant::now();
    let probe = connections.kv_connections()[0]
        .range(request.clone())
        .await
        .map_err(|status| call_error("range", status))?;
    let probe_seconds = started.elapsed().as_secs_f64();
    let plan = Plan {
        label: "range".into(),
        total: args.total,
        rate: args.rate,
        n_classes: 1,
    };
    let (recorders, duration) = runner::run(plan, connections.kv_connections(), move |kv, _| {
        let request = request.clone();
        Box::pin(async move { kv.range(request).await.map(|_| 0) })
    })
    .await;
    let [recorder] = <[_; 1]>::try_from(recorders).expect("one class");
    Ok(Summary::new("range")
        .section(Section::new("range", recorder, duration))
        .detail("keys_per_range", probe.count)
        .detail("first_range_seconds", probe_seconds))
}

pub async fn txn_put(connections: &Connections, args: &TxnPutArgs) -> anyhow::Result<Summary> {
    let key_space = KeySpace {
        key_size: args.key_size,
        key_space_size: args.key_space_size,
        sequential: false,
    };
    key_space.check()?;
    anyhow::ensure!(args.txn_ops >= 1, "--txn-ops must be at least 1");
    // A txn may not put the same key twice, so each txn needs distinct keys.
    anyhow::ensure!(
        args.txn_ops <= args.key_space_size,
        "--txn-ops {} needs --key-space-size of at least {0}",
        args.txn_ops
    );
    let value = keys::random_value(args.val_size);
    let txn_ops = args.txn_ops;
    let plan = Plan {
        label: "txn-put".into(),
        total: args.total,
        rate: args.rate,
        n_classes: 1,
    };
    let (recorders, duration) = runner::run(
        plan,
        connections.kv_connections(),
        move |kv, request_idx| {
            let first_key = key_space.key_number(request_idx);
            let success = (0..txn_ops)
                .map(|op_idx| {
                    let number = (first_key + op_idx) % key_space.key_space_size;
                    put_op(keys::key_bytes(number, key_space.key_size), value.clone())
                })
                .collect();
            let request = TxnRequest {
                success,
                ..Default::default()
            };
            Box::pin(async move { kv.txn(request).await.map(|_| 0) })
        },
    )
    .await;
    let [recorder] = <[_; 1]>::try_from(recorders).expect("one class");
    Ok(Summary::new("txn-put").section(Section::new("txn-put", recorder, duration)))
}

pub async fn txn_mixed(connections: &Connections, args: &TxnMixedArgs) -> anyhow::Result<Summary> {
    let key_space = KeySpace {
        key_size: args.key_size,
        key_space_size: args.key_space_size,
        sequential: false,
    };
    key_space.check()?;
    anyhow::ensure!(args.rw_ratio >= 0.0, "--rw-ratio must not be negative");
    let value = keys::random_value(args.val_size);
    fill_key_space(connections, key_space, &value).await?;
    let read = RangeRequest {
        key: Bytes::from(args.key.clone().into_bytes()),
        // etcd's tool reads from KEY to the end of the key space by default.
        range_end: match &args.range_end {
            Some(end) => Bytes::from(end.clone().into_bytes()),
            None => Bytes::from_static(b"\0"),
        },
        limit: args.limit,
        serializable: args.consistency == Consistency::Serializable,
        ..Default::default()
    };
    let read_fraction = args.rw_ratio / (args.rw_ratio + 1.0);
    let plan = Plan {
        label: "txn-mixed".into(),
        total: args.total,
        rate: args.rate,
        n_classes: 2,
    };
    let (recorders, duration) = runner::run(
        plan,
        connections.kv_connections(),
        move |kv, request_idx| {
            let is_read = rand::random::<f64>() < read_fraction;
            let (class, operation) = if is_read {
                (
                    0,
                    RequestOp {
                        request: Some(request_op::Request::RequestRange(read.clone())),
                    },
                )
            } else {
                (1, put_op(key_space.key(request_idx), value.clone()))
            };
            let request = TxnRequest {
                success: vec![operation],
                ..Default::default()
            };
            Box::pin(async move { kv.txn(request).await.map(|_| class) })
        },
    )
    .await;
    let [reads, writes] = <[_; 2]>::try_from(recorders).expect("two classes");
    Ok(Summary::new("txn-mixed")
        .section(Section::new("txn-mixed read", reads, duration))
        .section(Section::new("txn-mixed write", writes, duration)))
}

/// Writes every key of the key space once, as etcd's txn-mixed does first.
async fn fill_key_space(
    connections: &Connections,
    key_space: KeySpace,
    value: &Bytes,
) -> anyhow::Result<()> {
    let value = value.clone();
    let plan = Plan {
        label: "fill".into(),
        total: key_space.key_space_size,
        rate: 0,
        n_classes: 1,
    };
    let clients = connections.kv_connections();
    let (recorders, _) = runner::run(plan, clients, move |kv, key_number| {
        let request = PutRequest {
            key: keys::key_bytes(key_number, key_space.key_size),
            value: value.clone(),
            ..Default::default()
        };
        Box::pin(async move { kv.put(request).await.map(|_| 0) })
    })
    .await;
    let errors = recorders[0].n_errors();
    anyhow::ensure!(errors == 0, "filling the key space: {errors} puts failed");
    Ok(())
}

fn put_op(key: Bytes, value: Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

/// The range end that covers every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`); "\0" (every key) for an empty prefix.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return Bytes::from(end);
        }
        end.pop();
    }
    Bytes::from_static(b"\0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(&prefix_end(b"abc")[..], b"abd");
        assert_eq!(&prefix_end(b"a\xff")[..], b"b");
        assert_eq!(&prefix_end(b"")[..], b"\0");
        assert_eq!(&prefix_end(b"\xff")[..], b"\0");
    }
}
