//! The replicated state machine: what a committed raft entry does. It owns the
//! MVCC key-value state and the cluster's member list, and never does network I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use prost::Message as _;
use proto::etcdserverpb::{
    CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, Member, PutResponse, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse, request_op,
};
use proto::mvccpb::Event;
use proto::shoalpb::RaftRequest;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::clock::Clock;
use crate::error::StoreError;
use crate::lease::{Lessor, MAX_LEASE_TTL_SECONDS};
use proto::etcdserverpb::alarm_request::AlarmAction;
use proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};

/// Whether a txn could write a key (on either branch), which the space quota refuses.
pub fn txn_has_put(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(txn.failure.iter())
        .any(|op| match &op.request {
            Some(request_op::Request::RequestPut(_)) => true,
            Some(request_op::Request::RequestTxn(inner)) => txn_has_put(inner),
            _ => false,
        })
}

/// etcd's checkTxnAuth: read on every compare, and what each operation of
/// both branches needs (nested txns included).
pub fn check_txn(
    auth: &crate::auth::AuthStore,
    info: &crate::auth::AuthInfo,
    txn: &TxnRequest,
) -> Result<(), crate::auth::AuthError> {
    use crate::auth::Access;
    for compare in &txn.compare {
        auth.check(info, &compare.key, &compare.range_end, Access::Read)?;
    }
    for op in txn.success.iter().chain(txn.failure.iter()) {
        match &op.request {
            Some(request_op::Request::RequestRange(range)) => {
                auth.check(info, &range.key, &range.range_end, Access::Read)?;
            }
            Some(request_op::Request::RequestPut(put)) => {
                auth.check(info, &put.key, &[], Access::Write)?;
            }
            Some(request_op::Request::RequestDeleteRange(delete)) => {
                if delete.prev_kv {
                    auth.check(info, &delete.key, &delete.range_end, Access::Read)?;
                }
                auth.check(info, &delete.key, &delete.range_end, Access::Write)?;
            }
            Some(request_op::Request::RequestTxn(inner)) => check_txn(auth, info, inner)?,
            None => {}
        }
    }
    Ok(())
}

/// Member id -> the member (etcd's `Member` message).
const MEMBERS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("cluster_members");
/// (member id, alarm type) -> nothing: the active alarms.
const ALARMS: TableDefinition<'_, (u64, i32), ()> = TableDefinition::new("alarms");
/// "cluster_id" -> u64, big-endian.
const CLUSTER_META: TableDefinition<'_, &str, u64> = TableDefinition::new("cluster_meta");

/// What applying one client request produced, delivered to the waiting client.
#[derive(Debug, Clone)]
pub enum ApplyResult {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarms(Vec<AlarmMember>),
    /// An auth change applied; Authenticate's carries the new token.
    Auth(crate::auth::AuthApplied),
    /// A membership change: the member it concerned and the members afterwards.
    Members {
        member: Option<Member>,
        members: Vec<Member>,
    },
    /// Requests with no client-visible result (member publication).
    Done,
    Error(StoreError),
}

pub struct StateMachine {
    pub mvcc: Arc<mvcc::Mvcc>,
    pub lessor: Lessor,
    pub auth: crate::auth::AuthStore,
    db: Arc<mvcc::Db>,
    members: RwLock<BTreeMap<u64, Member>>,
    cluster_id: RwLock<u64>,
    alarms: RwLock<std::collections::BTreeSet<(u64, i32)>>,
}

/// The version of the snapshot envelope (see `encode_snapshot`).
const SNAPSHOT_FORMAT_VERSION: u8 = 2;

impl StateMachine {
    pub fn open(
        db: Arc<mvcc::Db>,
        min_lease_ttl_seconds: i64,
        clock: Clock,
    ) -> Result<StateMachine, String> {
        let mvcc = mvcc::Mvcc::open(db.clone()).map_err(|error| error.to_string())?;
        let machine = StateMachine {
            mvcc: Arc::new(mvcc),
            lessor: Lessor::new(min_lease_ttl_seconds, clock),
            auth: crate::auth::AuthStore::default(),
            db,
            members: RwLock::new(BTreeMap::new()),
            cluster_id: RwLock::new(0),
            alarms: RwLock::new(std::collections::BTreeSet::new()),
        };
        machine.load_members()?;
        machine.reload_leases()?;
        machine.auth.load(&machine.db)?;
        Ok(machine)
    }

    /// Rebuilds the lessor from disk and the published MVCC state.
    pub fn reload_leases(&self) -> Result<(), String> {
        let everything = RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            keys_only: true,
            serializable: true,
            ..Default::default()
        };
        let live = self
            .mvcc
            .range(&everything)
            .map_err(|error| error.to_string())?;
        let attached = live
            .kvs
            .into_iter()
            .filter(|kv| kv.lease != 0)
            .map(|kv| (kv.key, kv.lease))
            .collect();
        self.lessor.load(&self.db, attached)
    }

    fn load_members(&self) -> Result<(), String> {
        let rtx = self.db.begin_read().map_err(|error| error.to_string())?;
        let mut members = BTreeMap::new();
        match rtx.open_table(MEMBERS) {
            Ok(table) => {
                for item in table.iter().map_err(|error| error.to_string())? {
                    let (id, bytes) = item.map_err(|error| error.to_string())?;
                    let member =
                        Member::decode(bytes.value()).map_err(|error| error.to_string())?;
                    members.insert(id.value(), member);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(error) => return Err(error.to_string()),
        }
        let cluster_id = match rtx.open_table(CLUSTER_META) {
            Ok(table) => table
                .get("cluster_id")
                .map_err(|error| error.to_string())?
                .map(|value| value.value())
                .unwrap_or(0),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(error) => return Err(error.to_string()),
        };
        *self.members.write() = members;
        *self.cluster_id.write() = cluster_id;
        let mut alarms = std::collections::BTreeSet::new();
        match rtx.open_table(ALARMS) {
            Ok(table) => {
                for item in table.iter().map_err(|error| error.to_string())? {
                    let (key, _) = item.map_err(|error| error.to_string())?;
                    alarms.insert(key.value());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(error) => return Err(error.to_string()),
        }
        *self.alarms.write() = alarms;
        Ok(())
    }

    /// The active alarms of type `alarm` (every type for `NONE`).
    pub fn alarms(&self, alarm: i32) -> Vec<AlarmMember> {
        self.alarms
            .read()
            .iter()
            .filter(|(_, kind)| alarm == AlarmType::None as i32 || *kind == alarm)
            .map(|(member_id, kind)| AlarmMember {
                member_id: *member_id,
                alarm: *kind,
            })
            .collect()
    }

    pub fn no_space(&self) -> bool {
        self.alarms
            .read()
            .iter()
            .any(|(_, kind)| *kind == AlarmType::Nospace as i32)
    }

    fn apply_alarm(
        &self,
        wtx: &WriteTransaction,
        request: &AlarmRequest,
    ) -> Result<ApplyResult, String> {
        let key = (request.member_id, request.alarm);
        let mut table = wtx.open_table(ALARMS).map_err(|error| error.to_string())?;
        let mut alarms = self.alarms.write();
        let changed = if request.action == AlarmAction::Activate as i32 {
            if request.alarm == AlarmType::None as i32 {
                return Ok(ApplyResult::Alarms(Vec::new()));
            }
            table.insert(key, ()).map_err(|error| error.to_string())?;
            alarms.insert(key);
            true
        } else if request.action == AlarmAction::Deactivate as i32 {
            table.remove(key).map_err(|error| error.to_string())?;
            alarms.remove(&key)
        } else {
            false
        };
        let answer = if changed {
            vec![AlarmMember {
                member_id: request.member_id,
                alarm: request.alarm,
            }]
        } else {
            Vec::new()
        };
        Ok(ApplyResult::Alarms(answer))
    }

    pub fn cluster_id(&self) -> u64 {
        *self.cluster_id.read()
    }

    pub fn members(&self) -> Vec<Member> {
        self.members.read().values().cloned().collect()
    }

    pub fn member(&self, id: u64) -> Option<Member> {
        self.members.read().get(&id).cloned()
    }

    /// Records the founding members and the cluster id (first start only).
    pub fn bootstrap_members(
        &self,
        wtx: &WriteTransaction,
        cluster_id: u64,
        members: Vec<Member>,
    ) -> Result<(), String> {
        let mut table = wtx.open_table(MEMBERS).map_err(|error| error.to_string())?;
        // Replaces the whole list (a restore brings a new one).
        table
            .retain(|_, _| false)
            .map_err(|error| error.to_string())?;
        for member in &members {
            table
                .insert(member.id, member.encode_to_vec().as_slice())
                .map_err(|error| error.to_string())?;
        }
        drop(table);
        wtx.open_table(CLUSTER_META)
            .map_err(|error| error.to_string())?
            .insert("cluster_id", cluster_id)
            .map_err(|error| error.to_string())?;
        *self.members.write() = members
            .into_iter()
            .map(|member| (member.id, member))
            .collect();
        *self.cluster_id.write() = cluster_id;
        Ok(())
    }

    /// Applies one client request; the changes it made are appended to `events`.
    /// Storage failures are fatal to the caller; request errors (a compacted
    /// revision, a missing key or lease) are results for the client.
    /// `index` is the entry's raft index.
    pub fn apply_request(
        &self,
        writer: &mut mvcc::Writer<'_>,
        wtx: &WriteTransaction,
        request: &RaftRequest,
        index: u64,
        events: &mut Vec<Event>,
    ) -> Result<ApplyResult, String> {
        if crate::auth::is_auth_request(request) {
            return Ok(match self.auth.apply(wtx, request, index)? {
                Ok(applied) => ApplyResult::Auth(applied),
                Err(error) => ApplyResult::Error(StoreError::Auth(error)),
            });
        }
        if let Err(error) = self.check_permissions(request) {
            return Ok(ApplyResult::Error(StoreError::Auth(error)));
        }
        let result = self.apply_request_inner(writer, wtx, request);
        let new_events = writer.take_events();
        self.lessor.track(&new_events);
        events.extend(new_events);
        match result {
            Ok(result) => Ok(result),
            Err(mvcc::MvccError::Storage(text)) => Err(text),
            Err(error) => Ok(ApplyResult::Error(error.into())),
        }
    }

    /// etcd's auth applier: a client's request is checked again as it
    /// applies, against the auth state of that moment, so a permission revoked
    /// between the API's check and the apply is honoured (and a request checked
    /// at an older auth revision fails with `revision of auth store is old`).
    /// Requests the members make themselves (lease expiry, compaction) carry
    /// no header and are not checked.
    fn check_permissions(&self, request: &RaftRequest) -> Result<(), crate::auth::AuthError> {
        use crate::auth::{Access, AuthInfo};
        let Some(header) = &request.header else {
            return Ok(());
        };
        if !self.auth.is_enabled() {
            return Ok(());
        }
        let info = AuthInfo {
            username: header.username.clone(),
            revision: header.auth_revision,
        };
        if let Some(put) = &request.put {
            self.auth.check(&info, &put.key, &[], Access::Write)?;
            self.check_lease_keys(&info, put.lease)?;
            if put.prev_kv {
                self.auth.check(&info, &put.key, &[], Access::Read)?;
            }
        }
        if let Some(delete) = &request.delete_range {
            self.auth
                .check(&info, &delete.key, &delete.range_end, Access::Write)?;
            if delete.prev_kv {
                self.auth
                    .check(&info, &delete.key, &delete.range_end, Access::Read)?;
            }
        }
        if let Some(txn) = &request.txn {
            check_txn(&self.auth, &info, txn)?;
        }
        if let Some(revoke) = &request.lease_revoke {
            self.check_lease_keys(&info, revoke.id)?;
        }
        Ok(())
    }

    /// Write permission on every key attached to a lease (etcd's checkLeasePuts).
    fn check_lease_keys(
        &self,
        info: &crate::auth::AuthInfo,
        lease: i64,
    ) -> Result<(), crate::auth::AuthError> {
        if lease == 0 {
            return Ok(());
        }
        for key in self.lessor.keys_of(lease).unwrap_or_default() {
            self.auth
                .check(info, &key, &[], crate::auth::Access::Write)?;
        }
        Ok(())
    }

    fn apply_request_inner(
        &self,
        writer: &mut mvcc::Writer<'_>,
        wtx: &WriteTransaction,
        request: &RaftRequest,
    ) -> Result<ApplyResult, mvcc::MvccError> {
        let storage = mvcc::MvccError::Storage;
        if let Some(alarm) = &request.alarm {
            return self.apply_alarm(wtx, alarm).map_err(storage);
        }
        // With the space alarm raised only what frees or reads space applies (etcd's
        // "capped" applier).
        if self.no_space() {
            let adds_data = request.put.is_some()
                || request.lease_grant.is_some()
                || request.txn.as_ref().is_some_and(txn_has_put);
            if adds_data {
                return Ok(ApplyResult::Error(StoreError::NoSpace));
            }
        }
        if let Some(put) = &request.put {
            if put.lease != 0 && !self.lessor.exists(put.lease) {
                return Ok(ApplyResult::Error(StoreError::LeaseNotFound));
            }
            return writer.put(put).map(ApplyResult::Put);
        }
        if let Some(delete) = &request.delete_range {
            return writer.delete_range(delete).map(ApplyResult::DeleteRange);
        }
        if let Some(txn) = &request.txn {
            // etcd checks the leases of the puts on the branch the compares choose.
            let leases = writer.txn_put_leases(txn)?;
            if leases
                .iter()
                .any(|lease| *lease != 0 && !self.lessor.exists(*lease))
            {
                return Ok(ApplyResult::Error(StoreError::LeaseNotFound));
            }
            return writer.txn(txn).map(ApplyResult::Txn);
        }
        if let Some(compaction) = &request.compaction {
            return writer
                .compact(compaction.revision)
                .map(ApplyResult::Compaction);
        }
        if let Some(grant) = &request.lease_grant {
            if grant.ttl > MAX_LEASE_TTL_SECONDS {
                return Ok(ApplyResult::Error(StoreError::LeaseTtlTooLarge));
            }
            let ttl = self.lessor.effective_ttl(grant.ttl);
            if !self
                .lessor
                .apply_grant(wtx, grant.id, ttl)
                .map_err(storage)?
            {
                return Ok(ApplyResult::Error(StoreError::LeaseExists));
            }
            return Ok(ApplyResult::LeaseGrant(LeaseGrantResponse {
                header: Some(ResponseHeader {
                    revision: writer.revision(),
                    ..Default::default()
                }),
                id: grant.id,
                ttl,
                error: String::new(),
            }));
        }
        if let Some(revoke) = &request.lease_revoke {
            let Some(keys) = self.lessor.keys_of(revoke.id) else {
                return Ok(ApplyResult::Error(StoreError::LeaseNotFound));
            };
            if !keys.is_empty() {
                // Every attached key goes at one revision, as in etcd.
                let deletes = keys
                    .into_iter()
                    .map(|key| RequestOp {
                        request: Some(request_op::Request::RequestDeleteRange(
                            DeleteRangeRequest {
                                key,
                                ..Default::default()
                            },
                        )),
                    })
                    .collect();
                writer.txn(&TxnRequest {
                    compare: Vec::new(),
                    success: deletes,
                    failure: Vec::new(),
                })?;
            }
            self.lessor.apply_revoke(wtx, revoke.id).map_err(storage)?;
            return Ok(ApplyResult::LeaseRevoke(LeaseRevokeResponse {
                header: Some(ResponseHeader {
                    revision: writer.revision(),
                    ..Default::default()
                }),
            }));
        }
        if let Some(member) = &request.publish_member {
            self.publish_member(wtx, member).map_err(storage)?;
        }
        if let Some(update) = &request.member_update {
            if !self
                .update_member_peer_urls(wtx, update.id, &update.peer_ur_ls)
                .map_err(storage)?
            {
                return Ok(ApplyResult::Error(StoreError::MemberNotFound));
            }
            return Ok(ApplyResult::Members {
                member: None,
                members: self.members(),
            });
        }
        Ok(ApplyResult::Done)
    }

    fn write_member(&self, wtx: &WriteTransaction, member: &Member) -> Result<(), String> {
        wtx.open_table(MEMBERS)
            .map_err(|error| error.to_string())?
            .insert(member.id, member.encode_to_vec().as_slice())
            .map_err(|error| error.to_string())?;
        Ok(())
    }

    fn update_member_peer_urls(
        &self,
        wtx: &WriteTransaction,
        id: u64,
        peer_urls: &[String],
    ) -> Result<bool, String> {
        let mut members = self.members.write();
        let Some(member) = members.get_mut(&id) else {
            return Ok(false);
        };
        member.peer_ur_ls = peer_urls.to_vec();
        let member = member.clone();
        drop(members);
        self.write_member(wtx, &member)?;
        Ok(true)
    }

    /// Applies a raft configuration change to the member list: a new voter or
    /// learner joins, a learner becomes a voter, or a member leaves.
    pub fn apply_member_change(
        &self,
        wtx: &WriteTransaction,
        change: raft::eraftpb::ConfChangeType,
        node_id: u64,
        described: Option<&Member>,
    ) -> Result<Option<Member>, String> {
        use raft::eraftpb::ConfChangeType;
        match change {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let is_learner = change == ConfChangeType::AddLearnerNode;
                let mut members = self.members.write();
                let member = match members.get_mut(&node_id) {
                    Some(existing) => {
                        existing.is_learner = is_learner;
                        existing.clone()
                    }
                    None => {
                        let mut member = described.cloned().unwrap_or_default();
                        member.id = node_id;
                        member.is_learner = is_learner;
                        members.insert(node_id, member.clone());
                        member
                    }
                };
                drop(members);
                self.write_member(wtx, &member)?;
                Ok(Some(member))
            }
            ConfChangeType::RemoveNode => {
                let removed = self.members.write().remove(&node_id);
                wtx.open_table(MEMBERS)
                    .map_err(|error| error.to_string())?
                    .remove(node_id)
                    .map_err(|error| error.to_string())?;
                Ok(removed)
            }
        }
    }

    /// A member announces its name and client URLs; its peer URLs stay as configured.
    fn publish_member(&self, wtx: &WriteTransaction, published: &Member) -> Result<(), String> {
        let mut members = self.members.write();
        let Some(member) = members.get_mut(&published.id) else {
            // A removed member's late announcement changes nothing.
            return Ok(());
        };
        member.name = published.name.clone();
        member.client_ur_ls = published.client_ur_ls.clone();
        wtx.open_table(MEMBERS)
            .map_err(|error| error.to_string())?
            .insert(member.id, member.encode_to_vec().as_slice())
            .map_err(|error| error.to_string())?;
        Ok(())
    }

    /// A consistent copy of the whole state, and the raft index it reflects.
    pub fn snapshot(&self) -> Result<(u64, Vec<u8>), String> {
        let applied_index = self.mvcc.consistent_index();
        let leases = self.lessor.all();
        let state = self.mvcc.snapshot().map_err(|error| error.to_string())?;
        let meta = proto::shoalpb::SnapshotMeta {
            cluster_id: self.cluster_id(),
            members: self.members(),
            leases: leases
                .iter()
                .map(|(id, ttl)| proto::shoalpb::LeaseRecord { id: *id, ttl: *ttl })
                .collect(),
            alarms: self.alarms(AlarmType::None as i32),
            auth: Some(self.auth.export()),
        };
        Ok((applied_index, encode_snapshot(&meta, &state)))
    }

    /// The whole state as etcd 3.4's backend file with its sha256 trailer: what
    /// `Maintenance.Snapshot` streams, so `etcdctl snapshot status` and
    /// `etcdctl snapshot restore` take it. The history comes from one read
    /// transaction; leases, members and alarms are read beside it, as for a
    /// raft snapshot.
    pub fn etcd_snapshot(&self) -> Result<Vec<u8>, String> {
        let auth = self.auth.export();
        let history = self
            .mvcc
            .export_history()
            .map_err(|error| error.to_string())?;
        let revisions = history
            .revisions
            .into_iter()
            .map(|stored| bbolt::StoredRevision {
                main: stored.main,
                sub: stored.sub,
                tombstone: stored.tombstone,
                kv: proto::mvccpb::KeyValue {
                    key: stored.key,
                    create_revision: stored.create_revision,
                    mod_revision: stored.main,
                    version: stored.version,
                    value: stored.value,
                    lease: stored.lease,
                },
            })
            .collect();
        let backend = bbolt::EtcdBackend {
            revisions,
            compact_revision: history.compact_revision,
            scheduled_compact_revision: history.compact_revision,
            consistent_index: history.consistent_index,
            leases: self.lessor.all(),
        };
        let cluster = bbolt::EtcdCluster {
            members: self
                .members()
                .into_iter()
                .map(|member| bbolt::EtcdMember {
                    id: member.id,
                    name: member.name,
                    peer_urls: member.peer_ur_ls,
                    client_urls: member.client_ur_ls,
                    is_learner: member.is_learner,
                })
                .collect(),
            // shoal keeps no record of removed members' ids.
            removed_member_ids: Vec::new(),
            cluster_version: Some(crate::ETCD_API_VERSION.to_owned()),
            alarms: self
                .alarms(AlarmType::None as i32)
                .into_iter()
                .map(|alarm| (alarm.member_id, alarm.alarm))
                .collect(),
            auth_revision: auth.revision,
            auth_enabled: auth.enabled.then_some(true),
            auth_users: auth
                .users
                .iter()
                .map(|user| (user.name.to_vec(), user.encode_to_vec()))
                .collect(),
            auth_roles: auth
                .roles
                .iter()
                .map(|role| (role.name.to_vec(), role.encode_to_vec()))
                .collect(),
        };
        bbolt::write_etcd_snapshot(backend, &cluster).map_err(|error| error.to_string())
    }
}

/// The snapshot envelope: format version, the length of the metadata
/// (`SnapshotMeta`: cluster id, members, leases, alarms), the metadata, then the
/// MVCC state in its own format.
pub fn encode_snapshot(meta: &proto::shoalpb::SnapshotMeta, state: &[u8]) -> Vec<u8> {
    let meta = meta.encode_to_vec();
    let mut data = Vec::with_capacity(1 + 4 + meta.len() + state.len());
    data.push(SNAPSHOT_FORMAT_VERSION);
    data.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    data.extend_from_slice(&meta);
    data.extend_from_slice(state);
    data
}

impl StateMachine {
    /// Replaces the whole state with a snapshot's (built by [`StateMachine::snapshot`]).
    pub fn restore(&self, wtx: &WriteTransaction, data: &[u8]) -> Result<(), String> {
        if data.first() != Some(&SNAPSHOT_FORMAT_VERSION) || data.len() < 5 {
            return Err("snapshot has an unknown format".into());
        }
        let meta_len = u32::from_be_bytes(data[1..5].try_into().expect("4 bytes")) as usize;
        let meta_bytes = data
            .get(5..5 + meta_len)
            .ok_or_else(|| "snapshot is truncated".to_string())?;
        let meta =
            proto::shoalpb::SnapshotMeta::decode(meta_bytes).map_err(|error| error.to_string())?;
        self.mvcc
            .restore(wtx, &data[5 + meta_len..])
            .map_err(|error| error.to_string())?;
        let leases: Vec<(i64, i64)> = meta
            .leases
            .iter()
            .map(|lease| (lease.id, lease.ttl))
            .collect();
        self.lessor.restore_table(wtx, &leases)?;
        let mut table = wtx.open_table(ALARMS).map_err(|error| error.to_string())?;
        table
            .retain(|_, _| false)
            .map_err(|error| error.to_string())?;
        let mut alarms = std::collections::BTreeSet::new();
        for alarm in &meta.alarms {
            table
                .insert((alarm.member_id, alarm.alarm), ())
                .map_err(|error| error.to_string())?;
            alarms.insert((alarm.member_id, alarm.alarm));
        }
        drop(table);
        *self.alarms.write() = alarms;
        // A snapshot from before auth existed carries none: auth as new.
        let auth = meta.auth.unwrap_or(proto::shoalpb::AuthState {
            revision: 1,
            ..Default::default()
        });
        self.auth.restore(wtx, &auth)?;
        self.bootstrap_members(wtx, meta.cluster_id, meta.members)
    }
}
