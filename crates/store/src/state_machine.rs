//! The replicated state machine: what a committed raft entry does. It owns the
//! MVCC key-value state and the cluster's member list, and never does network I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message as _;
use proto::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, Member, PutResponse, TxnResponse,
};
use proto::shoalpb::RaftRequest;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::error::StoreError;

/// Member id -> the member (etcd's `Member` message).
const MEMBERS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("cluster_members");
/// "cluster_id" -> u64, big-endian.
const CLUSTER_META: TableDefinition<'_, &str, u64> = TableDefinition::new("cluster_meta");

/// What applying one client request produced, delivered to the waiting client.
#[derive(Debug, Clone)]
pub enum ApplyResult {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    /// Requests with no client-visible result (member publication).
    Done,
    Error(StoreError),
}

pub struct StateMachine {
    pub mvcc: Arc<mvcc::Mvcc>,
    db: Arc<redb::Database>,
    members: RwLock<BTreeMap<u64, Member>>,
    cluster_id: RwLock<u64>,
}

/// Snapshot envelope: version byte, then members and cluster id, then the MVCC state.
const SNAPSHOT_FORMAT_VERSION: u8 = 1;

impl StateMachine {
    pub fn open(db: Arc<redb::Database>) -> Result<StateMachine, String> {
        let mvcc = mvcc::Mvcc::open(db.clone()).map_err(|error| error.to_string())?;
        let machine = StateMachine {
            mvcc: Arc::new(mvcc),
            db,
            members: RwLock::new(BTreeMap::new()),
            cluster_id: RwLock::new(0),
        };
        machine.load_members()?;
        Ok(machine)
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
        Ok(())
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

    /// Applies one client request. Storage failures are fatal to the caller; request
    /// errors (a compacted revision, a missing key) are results for the client.
    pub fn apply_request(
        &self,
        writer: &mut mvcc::Writer<'_>,
        wtx: &WriteTransaction,
        request: &RaftRequest,
    ) -> Result<ApplyResult, String> {
        let result = if let Some(put) = &request.put {
            if put.lease != 0 {
                // Leases arrive with the lease issue; until then no lease exists.
                Ok(ApplyResult::Error(StoreError::LeaseNotFound))
            } else {
                writer.put(put).map(ApplyResult::Put)
            }
        } else if let Some(delete) = &request.delete_range {
            writer.delete_range(delete).map(ApplyResult::DeleteRange)
        } else if let Some(txn) = &request.txn {
            // etcd checks the leases of the puts on the branch the compares choose.
            match writer.txn_put_leases(txn) {
                Ok(leases) if leases.iter().any(|lease| *lease != 0) => {
                    Ok(ApplyResult::Error(StoreError::LeaseNotFound))
                }
                Ok(_) => writer.txn(txn).map(ApplyResult::Txn),
                Err(error) => Err(error),
            }
        } else if let Some(compaction) = &request.compaction {
            writer
                .compact(compaction.revision)
                .map(ApplyResult::Compaction)
        } else if let Some(member) = &request.publish_member {
            self.publish_member(wtx, member)?;
            Ok(ApplyResult::Done)
        } else {
            Ok(ApplyResult::Done)
        };
        match result {
            Ok(result) => Ok(result),
            Err(mvcc::MvccError::Storage(text)) => Err(text),
            Err(error) => Ok(ApplyResult::Error(error.into())),
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
        let members = proto::etcdserverpb::MemberListResponse {
            header: None,
            members: self.members(),
        }
        .encode_to_vec();
        let applied_index = self.mvcc.consistent_index();
        let state = self.mvcc.snapshot().map_err(|error| error.to_string())?;
        let mut data = Vec::with_capacity(1 + 8 + 4 + members.len() + state.len());
        data.push(SNAPSHOT_FORMAT_VERSION);
        data.extend_from_slice(&self.cluster_id().to_be_bytes());
        data.extend_from_slice(&(members.len() as u32).to_be_bytes());
        data.extend_from_slice(&members);
        data.extend_from_slice(&state);
        Ok((applied_index, data))
    }

    /// Replaces the whole state with a snapshot's (built by [`StateMachine::snapshot`]).
    pub fn restore(&self, wtx: &WriteTransaction, data: &[u8]) -> Result<(), String> {
        if data.first() != Some(&SNAPSHOT_FORMAT_VERSION) || data.len() < 13 {
            return Err("snapshot has an unknown format".into());
        }
        let cluster_id = u64::from_be_bytes(data[1..9].try_into().expect("8 bytes"));
        let members_len = u32::from_be_bytes(data[9..13].try_into().expect("4 bytes")) as usize;
        let members_end = 13 + members_len;
        if data.len() < members_end {
            return Err("snapshot is truncated".into());
        }
        let members = proto::etcdserverpb::MemberListResponse::decode(&data[13..members_end])
            .map_err(|error| error.to_string())?
            .members;
        self.mvcc
            .restore(wtx, &data[members_end..])
            .map_err(|error| error.to_string())?;
        let mut table = wtx.open_table(MEMBERS).map_err(|error| error.to_string())?;
        table
            .retain(|_, _| false)
            .map_err(|error| error.to_string())?;
        drop(table);
        self.bootstrap_members(wtx, cluster_id, members)
    }
}
