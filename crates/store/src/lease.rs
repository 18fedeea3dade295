//! Leases (etcd's lessor). Which leases exist, their granted TTLs and the keys
//! attached to them are replicated state, changed only by applying raft entries.
//! When a lease expires is the leader's business alone: only the leader keeps
//! deadlines, and it revokes an expired lease by proposing the revocation, so
//! every member deletes the lease's keys at the same revision. A member that is
//! cut off cannot commit anything, so it cannot expire a lease on its own.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use proto::mvccpb::Event;
use proto::mvccpb::event::EventType;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::clock::Clock;

/// Lease id -> granted TTL in seconds.
const LEASES: TableDefinition<'_, i64, i64> = TableDefinition::new("leases");

/// etcd's largest TTL (`MaxLeaseTTL`).
pub const MAX_LEASE_TTL_SECONDS: i64 = 9_000_000_000;

struct Lease {
    ttl_seconds: i64,
    keys: BTreeSet<Bytes>,
    /// Only meaningful on the leader; `None` elsewhere ("never" in etcd's terms).
    expiry: Option<Instant>,
    /// When the leader last proposed revoking it, so it does not propose again at once.
    revoke_proposed: Option<Instant>,
}

#[derive(Default)]
struct Leases {
    by_id: HashMap<i64, Lease>,
    is_primary: bool,
}

/// What a leader learns about a lease when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    pub remaining_seconds: i64,
    pub granted_seconds: i64,
    pub keys: Vec<Bytes>,
}

pub struct Lessor {
    leases: Mutex<Leases>,
    clock: Clock,
    /// The smallest TTL granted: a lease must outlive an election (etcd's rule).
    min_ttl_seconds: i64,
}

impl Lessor {
    pub fn new(min_ttl_seconds: i64, clock: Clock) -> Lessor {
        Lessor {
            leases: Mutex::new(Leases::default()),
            clock,
            min_ttl_seconds,
        }
    }

    /// etcd's minimum TTL: one and a half election timeouts, rounded up to seconds.
    pub fn min_ttl_for(election_timeout: Duration) -> i64 {
        let min = election_timeout.as_secs_f64() * 1.5;
        (min.ceil() as i64).max(1)
    }

    /// Rebuilds the lease table and attachments from disk (at start and after a
    /// snapshot). `attached` lists every live key with its lease.
    pub fn load(&self, db: &mvcc::Db, attached: Vec<(Bytes, i64)>) -> Result<(), String> {
        let rtx = db.begin_read().map_err(|error| error.to_string())?;
        let mut by_id = HashMap::new();
        match rtx.open_table(LEASES) {
            Ok(table) => {
                for item in table.iter().map_err(|error| error.to_string())? {
                    let (id, ttl) = item.map_err(|error| error.to_string())?;
                    by_id.insert(
                        id.value(),
                        Lease {
                            ttl_seconds: ttl.value(),
                            keys: BTreeSet::new(),
                            expiry: None,
                            revoke_proposed: None,
                        },
                    );
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(error) => return Err(error.to_string()),
        }
        for (key, lease_id) in attached {
            if let Some(lease) = by_id.get_mut(&lease_id) {
                lease.keys.insert(key);
            }
        }
        let mut leases = self.leases.lock();
        let is_primary = leases.is_primary;
        leases.by_id = by_id;
        if is_primary {
            // A restored state on the leader: start every deadline afresh.
            let now = self.clock.now();
            for lease in leases.by_id.values_mut() {
                lease.expiry = Some(now + Duration::from_secs(lease.ttl_seconds as u64));
            }
        }
        Ok(())
    }

    /// The TTL a grant of `requested` seconds gets.
    pub fn effective_ttl(&self, requested: i64) -> i64 {
        requested.max(self.min_ttl_seconds)
    }

    pub fn exists(&self, id: i64) -> bool {
        self.leases.lock().by_id.contains_key(&id)
    }

    /// Every lease, soonest to expire first (as etcd lists them); on a member
    /// that keeps no deadlines, by id.
    pub fn ids(&self) -> Vec<i64> {
        let leases = self.leases.lock();
        let mut ids: Vec<(Option<Instant>, i64)> = leases
            .by_id
            .iter()
            .map(|(id, lease)| (lease.expiry, *id))
            .collect();
        ids.sort_unstable_by(|a, b| match (a.0, b.0) {
            (Some(left), Some(right)) => left.cmp(&right).then(a.1.cmp(&b.1)),
            _ => a.1.cmp(&b.1),
        });
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Applies a grant. False if the id is taken.
    pub fn apply_grant(
        &self,
        wtx: &WriteTransaction,
        id: i64,
        ttl_seconds: i64,
    ) -> Result<bool, String> {
        let mut leases = self.leases.lock();
        if leases.by_id.contains_key(&id) {
            return Ok(false);
        }
        wtx.open_table(LEASES)
            .map_err(|error| error.to_string())?
            .insert(id, ttl_seconds)
            .map_err(|error| error.to_string())?;
        let expiry = leases
            .is_primary
            .then(|| self.clock.now() + Duration::from_secs(ttl_seconds as u64));
        leases.by_id.insert(
            id,
            Lease {
                ttl_seconds,
                keys: BTreeSet::new(),
                expiry,
                revoke_proposed: None,
            },
        );
        Ok(true)
    }

    /// The keys to delete when revoking `id`, or `None` if there is no such lease.
    pub fn keys_of(&self, id: i64) -> Option<Vec<Bytes>> {
        self.leases
            .lock()
            .by_id
            .get(&id)
            .map(|lease| lease.keys.iter().cloned().collect())
    }

    /// Removes a lease (its keys were deleted in the same transaction).
    pub fn apply_revoke(&self, wtx: &WriteTransaction, id: i64) -> Result<(), String> {
        wtx.open_table(LEASES)
            .map_err(|error| error.to_string())?
            .remove(id)
            .map_err(|error| error.to_string())?;
        self.leases.lock().by_id.remove(&id);
        Ok(())
    }

    /// Follows key attachments through applied changes: a put moves its key to the
    /// put's lease, a delete detaches it.
    pub fn track(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut leases = self.leases.lock();
        for event in events {
            let Some(kv) = &event.kv else { continue };
            let previous_lease = event.prev_kv.as_ref().map_or(0, |prev| prev.lease);
            let new_lease = if event.r#type == EventType::Put as i32 {
                kv.lease
            } else {
                0
            };
            if previous_lease != 0
                && previous_lease != new_lease
                && let Some(lease) = leases.by_id.get_mut(&previous_lease)
            {
                lease.keys.remove(&kv.key);
            }
            if new_lease != 0
                && let Some(lease) = leases.by_id.get_mut(&new_lease)
            {
                lease.keys.insert(kv.key.clone());
            }
        }
    }

    /// This member became leader: every lease gets its full TTL plus `extend`
    /// from now, so a leader change never expires a live lease early.
    pub fn promote(&self, extend: Duration) {
        let mut leases = self.leases.lock();
        leases.is_primary = true;
        let now = self.clock.now();
        for lease in leases.by_id.values_mut() {
            lease.expiry = Some(now + Duration::from_secs(lease.ttl_seconds as u64) + extend);
            lease.revoke_proposed = None;
        }
    }

    /// This member is no longer leader: it keeps no deadlines.
    pub fn demote(&self) {
        let mut leases = self.leases.lock();
        leases.is_primary = false;
        for lease in leases.by_id.values_mut() {
            lease.expiry = None;
            lease.revoke_proposed = None;
        }
    }

    pub fn is_primary(&self) -> bool {
        self.leases.lock().is_primary
    }

    /// Renews a lease on the leader. Returns its TTL, or `None` if it does not
    /// exist — or has expired, or has a revocation in flight: that revocation may
    /// still commit, and a client told its lease lives must not then lose it
    /// (etcd answers such a renewal with "lease not found" too).
    pub fn renew(&self, id: i64) -> Option<i64> {
        let mut leases = self.leases.lock();
        let lease = leases.by_id.get_mut(&id)?;
        let now = self.clock.now();
        let expired = lease.expiry.is_some_and(|expiry| expiry <= now);
        if expired || lease.revoke_proposed.is_some() {
            return None;
        }
        lease.expiry = Some(now + Duration::from_secs(lease.ttl_seconds as u64));
        Some(lease.ttl_seconds)
    }

    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<LeaseTimeToLive> {
        let leases = self.leases.lock();
        let lease = leases.by_id.get(&id)?;
        let remaining_seconds = match lease.expiry {
            Some(expiry) => expiry.saturating_duration_since(self.clock.now()).as_secs() as i64,
            None => lease.ttl_seconds,
        };
        Some(LeaseTimeToLive {
            remaining_seconds,
            granted_seconds: lease.ttl_seconds,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// On the leader: leases past their deadline that have no revocation in flight
    /// (or whose revocation was proposed long ago and may have been lost).
    pub fn expired(&self, now: Instant, retry_after: Duration, max: usize) -> Vec<i64> {
        let mut leases = self.leases.lock();
        if !leases.is_primary {
            return Vec::new();
        }
        // Only the due ones are collected and sorted (this runs every tick, on
        // the raft thread), in id order so a run of the simulation repeats.
        let mut expired: Vec<i64> = leases
            .by_id
            .iter()
            .filter(|(_, lease)| {
                let due = lease.expiry.is_some_and(|expiry| expiry <= now);
                let in_flight = lease
                    .revoke_proposed
                    .is_some_and(|proposed| now.duration_since(proposed) < retry_after);
                due && !in_flight
            })
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        expired.truncate(max);
        for id in &expired {
            if let Some(lease) = leases.by_id.get_mut(id) {
                lease.revoke_proposed = Some(now);
            }
        }
        expired
    }

    /// Every lease and its TTL, for a snapshot.
    pub fn all(&self) -> Vec<(i64, i64)> {
        let leases = self.leases.lock();
        let mut all: Vec<(i64, i64)> = leases
            .by_id
            .iter()
            .map(|(id, lease)| (*id, lease.ttl_seconds))
            .collect();
        all.sort_unstable();
        all
    }

    /// Replaces the lease table (inside the caller's transaction) with a snapshot's.
    pub fn restore_table(
        &self,
        wtx: &WriteTransaction,
        leases: &[(i64, i64)],
    ) -> Result<(), String> {
        let mut table = wtx.open_table(LEASES).map_err(|error| error.to_string())?;
        table
            .retain(|_, _| false)
            .map_err(|error| error.to_string())?;
        for (id, ttl) in leases {
            table.insert(*id, *ttl).map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (found by `shoal chaos`, seed 1): a leader without a quorum
    /// proposed revoking an expired lease; a keep-alive then renewed it; the
    /// revocation committed later and deleted the keys of a lease the client had
    /// just been told was alive. A renewal must be refused once a revocation may
    /// be in flight.
    #[test]
    fn renew_refuses_a_lease_whose_revocation_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let db = mvcc::Db::open(&dir.path().join("db"), 1 << 20).unwrap();
        let lessor = Lessor::new(1, Clock::system());
        lessor.promote(Duration::ZERO);
        let wtx = db.begin_write().unwrap();
        assert!(lessor.apply_grant(&wtx, 7, 1).unwrap());
        wtx.commit().unwrap();
        assert_eq!(lessor.renew(7), Some(1), "a live lease renews");

        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(lessor.expired(later, Duration::from_secs(10), 10), vec![7]);
        assert_eq!(
            lessor.renew(7),
            None,
            "a lease being revoked does not renew"
        );
    }

    #[test]
    fn renew_refuses_an_expired_lease_before_its_revocation_is_proposed() {
        let dir = tempfile::tempdir().unwrap();
        let db = mvcc::Db::open(&dir.path().join("db"), 1 << 20).unwrap();
        let lessor = Lessor::new(1, Clock::system());
        lessor.promote(Duration::ZERO);
        let wtx = db.begin_write().unwrap();
        assert!(lessor.apply_grant(&wtx, 8, 1).unwrap());
        wtx.commit().unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(lessor.renew(8), None);
    }
}
