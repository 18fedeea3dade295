//! Randomized differential test: random puts, deletes, txns, compactions, reopens and restores
//! against a naive model that keeps a full copy of the key space at every revision.
//!
//! Every random choice comes from one seed; a failure message names the seed and step.

mod common;

use std::collections::BTreeMap;

use common::{TestStore, bytes, text};
use mvcc::{MvccError, Writer};
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use proto::etcdserverpb::request_op::Request;
use proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
};
use proto::mvccpb::KeyValue;

/// Knuth's MMIX linear congruential generator; the high bits are the usable ones.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const KEYS: [&str; 7] = ["a", "b", "ba", "bb", "c", "d", "e"];

fn random_key(random: &mut Lcg) -> &'static str {
    KEYS[random.below(KEYS.len() as u64) as usize]
}

/// A random span: a single key, a from-key range, an interval (maybe inverted) or everything.
fn random_span(random: &mut Lcg) -> (String, String) {
    let key = random_key(random).to_string();
    match random.below(4) {
        0 => (key, String::new()),
        1 => (key, "\0".to_string()),
        2 => (key, random_key(random).to_string()),
        _ => ("\0".to_string(), "\0".to_string()),
    }
}

type State = BTreeMap<String, KeyValue>;

/// The naive model: the whole live key space after every revision.
struct Model {
    states: Vec<State>, // index = revision; revisions 0 and 1 are empty
    compact_revision: i64,
}

fn in_span(key: &str, start: &str, end: &str) -> bool {
    match end {
        "" => key == start,
        "\0" => key >= start,
        end => key >= start && key < end,
    }
}

impl Model {
    fn current(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        let current = self.current();
        if request.revision > current {
            return Err(MvccError::FutureRevision);
        }
        let revision = if request.revision <= 0 {
            current
        } else {
            request.revision
        };
        if revision < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        let (start, end) = (text(&request.key), text(&request.range_end));
        let mut kvs: Vec<KeyValue> = self.states[revision as usize]
            .iter()
            .filter(|(key, _)| in_span(key, &start, &end))
            .map(|(_, kv)| kv.clone())
            .collect();
        let count = kvs.len() as i64;
        if request.count_only {
            kvs.clear();
        }
        let sorting = request.sort_order() != SortOrder::None;
        if !sorting && request.limit > 0 {
            kvs.truncate(request.limit as usize + 1);
        }
        kvs.retain(|kv| {
            (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                && (request.max_mod_revision == 0 || kv.mod_revision <= request.max_mod_revision)
        });
        let mut order = request.sort_order();
        if order == SortOrder::None && request.sort_target() != SortTarget::Key {
            order = SortOrder::Ascend;
        }
        if order != SortOrder::None {
            let field = |kv: &KeyValue| -> (i64, Vec<u8>) {
                match request.sort_target() {
                    SortTarget::Key => (0, kv.key.to_vec()),
                    SortTarget::Version => (kv.version, vec![]),
                    SortTarget::Create => (kv.create_revision, vec![]),
                    SortTarget::Mod => (kv.mod_revision, vec![]),
                    SortTarget::Value => (0, kv.value.to_vec()),
                }
            };
            kvs.sort_by(|a, b| {
                let ordering = field(a).cmp(&field(b));
                if order == SortOrder::Descend {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
        }
        let mut more = false;
        if request.limit > 0 && kvs.len() > request.limit as usize {
            kvs.truncate(request.limit as usize);
            more = true;
        }
        if request.keys_only {
            for kv in &mut kvs {
                kv.value = bytes("");
            }
        }
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }
}

/// An etcd write transaction applied to the model: writes go to a working copy.
struct ModelTxn {
    begin: i64,
    working: State,
    changed: bool,
}

impl ModelTxn {
    fn new(model: &Model) -> ModelTxn {
        ModelTxn {
            begin: model.current(),
            working: model.states.last().unwrap().clone(),
            changed: false,
        }
    }

    fn put(&mut self, key: &str, value: &str, lease: i64, ignore_lease: bool) {
        let revision = self.begin + 1;
        let previous = self.working.get(key);
        let kv = KeyValue {
            key: bytes(key),
            create_revision: previous.map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.map_or(0, |p| p.version) + 1,
            value: bytes(value),
            lease: if ignore_lease {
                previous.unwrap().lease
            } else {
                lease
            },
        };
        self.working.insert(key.to_string(), kv);
        self.changed = true;
    }

    fn delete(&mut self, start: &str, end: &str) -> usize {
        let before = self.working.len();
        self.working.retain(|key, _| !in_span(key, start, end));
        let deleted = before - self.working.len();
        self.changed |= deleted > 0;
        deleted
    }

    fn finish(self, model: &mut Model) {
        if self.changed {
            model.states.push(self.working);
        }
    }
}

/// One random write, applied to the model and to up to two writers; returns what it did.
fn random_write(random: &mut Lcg, model: &mut Model, writers: &mut [&mut Writer<'_>]) -> String {
    match random.below(10) {
        0..=4 => {
            let key = random_key(random);
            let value = format!("v{}", random.below(1000));
            let lease = random.below(3) as i64;
            let ignore_lease = random.chance(15);
            let exists = model.states.last().unwrap().contains_key(key);
            let refused = ignore_lease && !exists;
            let request = PutRequest {
                key: bytes(key),
                value: bytes(&value),
                lease,
                prev_kv: random.chance(50),
                ignore_value: false,
                ignore_lease,
            };
            let expected_previous = model.states.last().unwrap().get(key).cloned();
            for writer in writers.iter_mut() {
                let response = writer.put(&request);
                if refused {
                    assert!(matches!(response, Err(MvccError::KeyNotFound)));
                } else {
                    let response = response.unwrap();
                    assert_eq!(response.header.unwrap().revision, model.current() + 1);
                    if request.prev_kv {
                        assert_eq!(response.prev_kv, expected_previous);
                    }
                }
            }
            if !refused {
                let mut txn = ModelTxn::new(model);
                txn.put(key, &value, lease, ignore_lease);
                txn.finish(model);
            }
            format!("put {key}={value} lease={lease} ignore_lease={ignore_lease}")
        }
        5..=7 => {
            let (start, end) = random_span(random);
            let request = DeleteRangeRequest {
                key: bytes(&start),
                range_end: bytes(&end),
                prev_kv: true,
            };
            let mut txn = ModelTxn::new(model);
            let expected_prev: Vec<KeyValue> = txn
                .working
                .iter()
                .filter(|(key, _)| in_span(key, &start, &end))
                .map(|(_, kv)| kv.clone())
                .collect();
            let deleted = txn.delete(&start, &end);
            txn.finish(model);
            for writer in writers.iter_mut() {
                let response = writer.delete_range(&request).unwrap();
                assert_eq!(response.deleted as usize, deleted);
                assert_eq!(response.prev_kvs, expected_prev);
                assert_eq!(response.header.unwrap().revision, model.current());
            }
            format!("delete {start:?}..{end:?} ({deleted})")
        }
        _ => {
            // A txn guarded by a version compare, writing distinct keys on either branch.
            let guard_key = random_key(random);
            let guard_version = random.below(3) as i64;
            let succeeded = model
                .states
                .last()
                .unwrap()
                .get(guard_key)
                .map_or(0, |kv| kv.version)
                == guard_version;
            let mut branches: [Vec<RequestOp>; 2] = [vec![], vec![]];
            let mut model_ops: [Vec<(bool, String, String)>; 2] = [vec![], vec![]];
            for branch in 0..2 {
                for _ in 0..random.below(3) + 1 {
                    let key = random_key(random);
                    if model_ops[branch].iter().any(|(_, k, _)| k == key) {
                        continue;
                    }
                    let is_put = random.chance(70);
                    let value = format!("t{}", random.below(1000));
                    branches[branch].push(RequestOp {
                        request: Some(if is_put {
                            Request::RequestPut(PutRequest {
                                key: bytes(key),
                                value: bytes(&value),
                                ..Default::default()
                            })
                        } else {
                            Request::RequestDeleteRange(DeleteRangeRequest {
                                key: bytes(key),
                                ..Default::default()
                            })
                        }),
                    });
                    model_ops[branch].push((is_put, key.to_string(), value));
                }
            }
            let request = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Version as i32,
                    key: bytes(guard_key),
                    target_union: Some(TargetUnion::Version(guard_version)),
                    range_end: bytes(""),
                }],
                success: branches[0].clone(),
                failure: branches[1].clone(),
            };
            let mut txn = ModelTxn::new(model);
            for (is_put, key, value) in &model_ops[if succeeded { 0 } else { 1 }] {
                if *is_put {
                    txn.put(key, value, 0, false);
                } else {
                    txn.delete(key, "");
                }
            }
            txn.finish(model);
            for writer in writers.iter_mut() {
                let response = writer.txn(&request).unwrap();
                assert_eq!(response.succeeded, succeeded);
                assert_eq!(response.header.unwrap().revision, model.current());
            }
            format!("txn if version({guard_key})=={guard_version} -> {succeeded}")
        }
    }
}

fn random_range(random: &mut Lcg, model: &Model) -> RangeRequest {
    let (start, end) = random_span(random);
    let sort_order = if random.chance(40) {
        random.below(3) as i32
    } else {
        SortOrder::None as i32
    };
    RangeRequest {
        key: bytes(&start),
        range_end: bytes(&end),
        limit: if random.chance(40) {
            random.below(4) as i64
        } else {
            0
        },
        revision: random.below(model.current() as u64 + 2) as i64,
        sort_order,
        sort_target: if random.chance(40) {
            random.below(5) as i32
        } else {
            0
        },
        keys_only: random.chance(20),
        count_only: random.chance(10),
        min_mod_revision: if random.chance(15) {
            random.below(model.current() as u64 + 1) as i64
        } else {
            0
        },
        max_mod_revision: if random.chance(15) {
            random.below(model.current() as u64 + 1) as i64
        } else {
            0
        },
        ..Default::default()
    }
}

fn check_range(store: &TestStore, model: &Model, request: &RangeRequest, context: &str) {
    let expected = model.range(request);
    let actual = store.range(request);
    match (expected, actual) {
        (Ok(expected), Ok(mut actual)) => {
            assert_eq!(
                actual.header.take().unwrap().revision,
                model.current(),
                "{context}"
            );
            assert_eq!(actual, expected, "{context}: {request:?}");
        }
        (Err(expected), Err(actual)) => {
            assert_eq!(expected.to_string(), actual.to_string(), "{context}")
        }
        (expected, actual) => {
            panic!("{context}: {request:?}: model {expected:?}, store {actual:?}")
        }
    }
}

fn run_seed(seed: u64, steps: usize) {
    let mut random = Lcg(seed);
    let mut store = TestStore::new();
    // A twin fed the same writes, never reopened: HashKV must agree with it.
    let twin = TestStore::new();
    let mut model = Model {
        states: vec![State::new(), State::new()],
        compact_revision: 0,
    };
    for step in 0..steps {
        let context = format!("seed {seed} step {step}");
        match random.below(20) {
            0..=11 => {
                // A batch of writes in one redb transaction, mirrored on the twin.
                let batch_size = random.below(3) + 1;
                let store_wtx = store.begin_write();
                let twin_wtx = twin.begin_write();
                {
                    let mut store_writer = store.mvcc.writer(&store_wtx);
                    let mut twin_writer = twin.mvcc.writer(&twin_wtx);
                    for _ in 0..batch_size {
                        random_write(
                            &mut random,
                            &mut model,
                            &mut [&mut store_writer, &mut twin_writer],
                        );
                    }
                    assert_eq!(store_writer.revision(), model.current(), "{context}");
                    store_writer.set_consistent_index(step as u64);
                }
                store_wtx.commit().unwrap();
                twin_wtx.commit().unwrap();
                store.mvcc.publish();
                twin.mvcc.publish();
            }
            12..=16 => {
                for _ in 0..3 {
                    let request = random_range(&mut random, &model);
                    check_range(&store, &model, &request, &context);
                }
            }
            17 => {
                let revision = random.below(model.current() as u64 + 2) as i64;
                let expected = if revision <= model.compact_revision {
                    Err(MvccError::Compacted)
                } else if revision > model.current() {
                    Err(MvccError::FutureRevision)
                } else {
                    Ok(())
                };
                let actual = store.compact(revision).map(|_| ());
                let twin_actual = twin.compact(revision).map(|_| ());
                assert_eq!(format!("{actual:?}"), format!("{expected:?}"), "{context}");
                assert_eq!(
                    format!("{twin_actual:?}"),
                    format!("{expected:?}"),
                    "{context}"
                );
                if expected.is_ok() {
                    model.compact_revision = revision;
                }
            }
            18 => {
                store = store.reopen();
                assert_eq!(store.mvcc.current_revision(), model.current(), "{context}");
                assert_eq!(
                    store.mvcc.compact_revision(),
                    model.compact_revision,
                    "{context}"
                );
            }
            _ => {
                // Replace the store by a fresh one restored from its own snapshot.
                let snapshot = store.mvcc.snapshot().unwrap();
                let restored = TestStore::new();
                let wtx = restored.begin_write();
                restored.mvcc.restore(&wtx, &snapshot).unwrap();
                wtx.commit().unwrap();
                restored.mvcc.publish();
                assert_eq!(
                    restored.mvcc.consistent_index(),
                    store.mvcc.consistent_index(),
                    "{context}"
                );
                store = restored;
            }
        }
        assert_eq!(
            store.mvcc.hash_kv(0).unwrap(),
            twin.mvcc.hash_kv(0).unwrap(),
            "{context}"
        );
    }
    // Finally every revision, whole key space, against the model.
    for revision in 0..=model.current() + 1 {
        let request = RangeRequest {
            key: bytes("\0"),
            range_end: bytes("\0"),
            revision,
            ..Default::default()
        };
        check_range(&store, &model, &request, &format!("seed {seed} final"));
    }
}

#[test]
fn random_operations_match_the_model() {
    for seed in 1..=12 {
        run_seed(seed, 300);
    }
}
