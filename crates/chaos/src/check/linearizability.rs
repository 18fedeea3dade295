//! Linearizability of register and multi-key compare-and-swap histories: the
//! Wing–Gong search with Lowe's cache of (linearized set, state), as porcupine
//! implements it, run on each key (or key group) separately. An operation whose
//! outcome is unknown may have happened at any time after its invocation: it is
//! given an infinite completion time and any result.

use std::collections::{BTreeMap, HashSet};

use crate::check::{CheckResult, Verdict};
use crate::history::{History, Operation, Outcome};

pub const REGISTER_PROPERTY: &str = "linearizability of single-key registers";
pub const CAS_PROPERTY: &str = "linearizability of multi-key compare-and-swap txns";

/// What one operation did to a group of keys, as the model sees it. The state
/// is the value of each key of the group (`None`: the key does not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelOp {
    Write {
        value: String,
    },
    Read {
        value: Option<String>,
    },
    Cas {
        expected: Vec<Option<String>>,
        new: Vec<String>,
        /// `None` when the outcome is unknown: any result is possible.
        result: Option<CasResult>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasResult {
    Swapped,
    Refused { observed: Vec<Option<String>> },
}

/// One operation with its real-time interval.
#[derive(Clone, Debug)]
pub struct TimedOp {
    pub invoke_ns: u64,
    /// `u64::MAX` for an unknown outcome.
    pub complete_ns: u64,
    pub op: ModelOp,
    /// Index of the record in the history, for reports.
    pub record_idx: usize,
}

type State = Vec<Option<String>>;

/// The state after `op` in `state`, or `None` if `op` with its recorded result
/// cannot happen in `state`.
fn step(state: &State, op: &ModelOp) -> Option<State> {
    match op {
        ModelOp::Write { value } => Some(vec![Some(value.clone())]),
        ModelOp::Read { value } => (state.first() == Some(value)).then(|| state.clone()),
        ModelOp::Cas {
            expected,
            new,
            result,
        } => {
            let matches = state == expected;
            match result {
                None if matches => Some(new.iter().cloned().map(Some).collect()),
                None => Some(state.clone()),
                Some(CasResult::Swapped) if matches => {
                    Some(new.iter().cloned().map(Some).collect())
                }
                Some(CasResult::Refused { observed }) if !matches && observed == state => {
                    Some(state.clone())
                }
                Some(_) => None,
            }
        }
    }
}

/// The result of searching one partition.
#[derive(Debug, PartialEq, Eq)]
pub enum SearchResult {
    Linearizable,
    /// No linearization exists; the record index of the operation whose
    /// completion could never be reached on the deepest path.
    NotLinearizable {
        stuck_at_record: usize,
    },
    /// The search gave up after this many steps.
    GaveUp {
        steps: u64,
    },
}

/// Wing–Gong search over `ops` starting from `initial`, bounded by `max_steps`.
pub fn search(ops: &[TimedOp], initial: State, max_steps: u64) -> SearchResult {
    // Entries: a call and a return per operation, sorted by time with calls
    // first at equal times (which only makes more operations concurrent).
    let n_ops = ops.len();
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n_ops);
    for (op_idx, op) in ops.iter().enumerate() {
        order.push((op.invoke_ns, false, op_idx));
        order.push((op.complete_ns.max(op.invoke_ns), true, op_idx));
    }
    order.sort();
    let n_entries = order.len();
    let head = n_entries; // sentinel
    let mut next: Vec<Option<usize>> = vec![None; n_entries + 1];
    let mut prev: Vec<usize> = vec![head; n_entries + 1];
    let mut is_return = vec![false; n_entries];
    let mut op_of = vec![0; n_entries];
    let mut return_of_op = vec![0; n_ops];
    let mut call_of_op = vec![0; n_ops];
    let mut previous = head;
    for (entry, &(_, returns, op_idx)) in order.iter().enumerate() {
        is_return[entry] = returns;
        op_of[entry] = op_idx;
        if returns {
            return_of_op[op_idx] = entry;
        } else {
            call_of_op[op_idx] = entry;
        }
        next[previous] = Some(entry);
        prev[entry] = previous;
        previous = entry;
    }
    let remove = |next: &mut Vec<Option<usize>>, prev: &mut Vec<usize>, entry: usize| {
        next[prev[entry]] = next[entry];
        if let Some(after) = next[entry] {
            prev[after] = prev[entry];
        }
    };
    let reinsert = |next: &mut Vec<Option<usize>>, prev: &mut Vec<usize>, entry: usize| {
        next[prev[entry]] = Some(entry);
        if let Some(after) = next[entry] {
            prev[after] = entry;
        }
    };

    let words = n_ops.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = initial;
    let mut entry = next[head];
    let mut steps = 0u64;
    let mut deepest = (0usize, 0usize);
    loop {
        if next[head].is_none() {
            return SearchResult::Linearizable;
        }
        steps += 1;
        if steps > max_steps {
            return SearchResult::GaveUp { steps };
        }
        match entry {
            Some(call) if !is_return[call] => {
                let op_idx = op_of[call];
                if let Some(new_state) = step(&state, &ops[op_idx].op) {
                    let mut with_op = linearized.clone();
                    with_op[op_idx / 64] |= 1 << (op_idx % 64);
                    if cache.insert((with_op.clone(), new_state.clone())) {
                        stack.push((call, std::mem::replace(&mut state, new_state)));
                        linearized = with_op;
                        remove(&mut next, &mut prev, call);
                        remove(&mut next, &mut prev, return_of_op[op_idx]);
                        entry = next[head];
                        continue;
                    }
                }
                entry = next[call];
            }
            reached => {
                // A return: some operation must have been linearized before it.
                if let Some(returned) = reached
                    && stack.len() >= deepest.0
                {
                    deepest = (stack.len(), ops[op_of[returned]].record_idx);
                }
                let Some((call, old_state)) = stack.pop() else {
                    return SearchResult::NotLinearizable {
                        stuck_at_record: deepest.1,
                    };
                };
                let op_idx = op_of[call];
                linearized[op_idx / 64] &= !(1 << (op_idx % 64));
                state = old_state;
                reinsert(&mut next, &mut prev, return_of_op[op_idx]);
                reinsert(&mut next, &mut prev, call);
                entry = next[call];
            }
        }
    }
}

/// Register and CAS operations of `history`, partitioned by key (registers) and
/// by key group (CAS txns).
pub fn partitions(
    history: &History,
) -> (
    BTreeMap<String, Vec<TimedOp>>,
    BTreeMap<String, Vec<TimedOp>>,
) {
    let mut registers: BTreeMap<String, Vec<TimedOp>> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<TimedOp>> = BTreeMap::new();
    for (record_idx, record) in history.records.iter().enumerate() {
        let complete_ns = match record.outcome {
            Outcome::Ok => record.complete_ns,
            Outcome::Unknown => u64::MAX,
            Outcome::Fail => continue,
        };
        let timed = |op| TimedOp {
            invoke_ns: record.invoke_ns,
            complete_ns,
            op,
            record_idx,
        };
        match &record.operation {
            Operation::Put { key, value, .. } => {
                registers
                    .entry(key.clone())
                    .or_default()
                    .push(timed(ModelOp::Write {
                        value: value.clone(),
                    }))
            }
            // A read that did not complete has no effect.
            Operation::Get { key, value, .. } if record.outcome == Outcome::Ok => registers
                .entry(key.clone())
                .or_default()
                .push(timed(ModelOp::Read {
                    value: value.clone(),
                })),
            Operation::Cas {
                keys,
                expected,
                new,
                succeeded,
                observed,
                ..
            } => {
                let result = match (record.outcome, succeeded, observed) {
                    (Outcome::Ok, Some(true), _) => Some(CasResult::Swapped),
                    (Outcome::Ok, Some(false), Some(observed)) => Some(CasResult::Refused {
                        observed: observed.clone(),
                    }),
                    _ => None,
                };
                groups
                    .entry(keys.join(","))
                    .or_default()
                    .push(timed(ModelOp::Cas {
                        expected: expected.clone(),
                        new: new.clone(),
                        result,
                    }));
            }
            _ => {}
        }
    }
    (registers, groups)
}

/// Checks every partition; one result per property.
pub fn check(history: &History, max_steps_per_key: u64) -> Vec<CheckResult> {
    let (registers, groups) = partitions(history);
    vec![
        check_partitions(REGISTER_PROPERTY, &registers, 1, history, max_steps_per_key),
        check_partitions(CAS_PROPERTY, &groups, 0, history, max_steps_per_key),
    ]
}

fn check_partitions(
    property: &'static str,
    partitions: &BTreeMap<String, Vec<TimedOp>>,
    register_width: usize,
    history: &History,
    max_steps: u64,
) -> CheckResult {
    let mut violations = Vec::new();
    let mut gave_up = Vec::new();
    let mut n_ops = 0;
    for (key, ops) in partitions {
        n_ops += ops.len();
        let width = if register_width > 0 {
            register_width
        } else {
            key.split(',').count()
        };
        match search(ops, vec![None; width], max_steps) {
            SearchResult::Linearizable => {}
            SearchResult::NotLinearizable { stuck_at_record } => {
                let record = &history.records[stuck_at_record];
                violations.push(format!(
                    "{key}: {} operations have no linearization; the search could not get past \
                     record #{stuck_at_record}: {}",
                    ops.len(),
                    serde_json::to_string(record).unwrap_or_default()
                ));
            }
            SearchResult::GaveUp { steps } => {
                gave_up.push(format!("{key} ({} operations, {steps} steps)", ops.len()))
            }
        }
    }
    let detail = format!("{} keys, {n_ops} operations", partitions.len());
    let verdict = if !violations.is_empty() {
        Verdict::Violation(violations)
    } else if !gave_up.is_empty() {
        Verdict::Unknown(format!("search bound reached on {}", gave_up.join(", ")))
    } else {
        Verdict::Pass
    };
    CheckResult {
        property,
        verdict,
        detail,
    }
}
