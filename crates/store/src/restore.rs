//! Offline restore: a new member data directory from a snapshot file, as etcd's
//! `snapshot restore` makes one. The snapshot's keys, values, revisions and
//! leases are kept; the membership is the new cluster's, from the flags.

use prost::Message as _;
use std::path::Path;
use std::sync::Arc;

use proto::etcdserverpb::Member as MemberInfo;
use sha2::{Digest, Sha256};

use crate::config::{self, MemberConfig};
use crate::error::StartError;
use crate::raft_log::RaftLog;
use crate::state_machine::StateMachine;

const SHA256_LEN: usize = 32;

/// What a restore produced.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// "shoal" or "etcd".
    pub source: &'static str,
    pub revision: i64,
    pub member_id: u64,
    pub cluster_id: u64,
}

/// etcd's clients accept a snapshot stream only if its body is a whole number of
/// 512-byte sectors followed by the body's sha256.
#[cfg(test)]
const SECTOR_BYTES: usize = 512;

/// Frames a snapshot as the files shoal's `Maintenance.Snapshot` streamed before
/// it streamed etcd's format: payload length (u64, little-endian), payload,
/// zero padding to a whole sector, then the sha256 of everything before it.
/// `restore` still takes such files; this writes them for its tests.
#[cfg(test)]
fn seal(payload: Vec<u8>) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + payload.len() + SECTOR_BYTES + SHA256_LEN);
    data.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    data.extend_from_slice(&payload);
    let padded_len = data.len().div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
    data.resize(padded_len, 0);
    let digest = Sha256::digest(&data);
    data.extend_from_slice(&digest);
    data
}

/// Checks the sha256 and returns the payload.
fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 8 + SHA256_LEN {
        return Err("the file is too short to be a snapshot".into());
    }
    let (data, digest) = bytes.split_at(bytes.len() - SHA256_LEN);
    if Sha256::digest(data).as_slice() != digest {
        return Err("sha256 mismatch: the snapshot file is damaged or incomplete".into());
    }
    let payload_len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) as usize;
    data.get(8..8 + payload_len)
        .ok_or_else(|| "the snapshot's length field exceeds the file".to_string())
}

/// Converts an etcd 3.4 backend (a bbolt file, as `etcdctl snapshot save` writes
/// it) into shoal's snapshot envelope: every retained revision, the compaction
/// point and the leases. etcd's membership is not carried over: the restored
/// cluster's members come from the flags, as with etcd's own restore.
fn import_etcd(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let backend = bbolt::read_etcd_backend(bytes).map_err(|error| error.to_string())?;
    let revisions: Vec<mvcc::HistoryRevision> = backend
        .revisions
        .into_iter()
        .map(|stored| mvcc::HistoryRevision {
            main: stored.main,
            sub: stored.sub,
            tombstone: stored.tombstone,
            key: stored.kv.key,
            value: stored.kv.value,
            create_revision: stored.kv.create_revision,
            version: stored.kv.version,
            lease: stored.kv.lease,
        })
        .collect();
    // A compaction etcd had scheduled but not finished would finish on its next
    // start; the restored store treats it as done.
    let compact_revision = backend
        .compact_revision
        .max(backend.scheduled_compact_revision);
    let state = mvcc::snapshot_from_history(backend.consistent_index, compact_revision, &revisions)
        .map_err(|error| format!("converting etcd's history: {error}"))?;
    // Users, roles and whether auth is on come along, as etcd's restore keeps them.
    let auth = bbolt::read_etcd_auth(bytes).map_err(|error| error.to_string())?;
    let decode_error = |error: prost::DecodeError| format!("etcd's auth records: {error}");
    let auth = proto::shoalpb::AuthState {
        enabled: auth.enabled,
        revision: auth.revision.max(1),
        users: auth
            .users
            .iter()
            .map(|user| proto::authpb::User::decode(user.as_slice()).map_err(decode_error))
            .collect::<Result<_, _>>()?,
        roles: auth
            .roles
            .iter()
            .map(|role| proto::authpb::Role::decode(role.as_slice()).map_err(decode_error))
            .collect::<Result<_, _>>()?,
    };
    let meta = proto::shoalpb::SnapshotMeta {
        leases: backend
            .leases
            .iter()
            .map(|(id, ttl)| proto::shoalpb::LeaseRecord { id: *id, ttl: *ttl })
            .collect(),
        auth: Some(auth),
        ..Default::default()
    };
    Ok(crate::state_machine::encode_snapshot(&meta, &state))
}

/// Creates `config.data_dir` holding the snapshot's data as a one-revision-old
/// raft log of the new cluster in `config.initial_cluster`.
pub fn restore(snapshot_path: &Path, config: &MemberConfig) -> Result<RestoreSummary, StartError> {
    config.validate()?;
    let path_text = snapshot_path.display().to_string();
    let bytes = std::fs::read(snapshot_path).map_err(|source| StartError::DataDir {
        path: path_text.clone(),
        source,
    })?;
    let (source, envelope) = if bbolt::is_bbolt(&bytes) {
        let envelope = import_etcd(&bytes).map_err(|message| StartError::Snapshot {
            path: path_text.clone(),
            message,
        })?;
        ("etcd", envelope)
    } else {
        let data = unseal(&bytes).map_err(|message| StartError::Snapshot {
            path: path_text.clone(),
            message,
        })?;
        ("shoal", data.to_vec())
    };

    let data_dir = &config.data_dir;
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(true)
    {
        return Err(StartError::Config(format!(
            "data-dir {} exists and is not empty; restore needs a new directory",
            data_dir.display()
        )));
    }
    let _lock = crate::lock_data_dir(data_dir)?;
    let db_path = data_dir.join("shoal.redb");
    let database_error = |message: String| StartError::Database {
        path: db_path.display().to_string(),
        message,
    };
    let db = Arc::new(
        mvcc::Db::open(&db_path, 64 << 20).map_err(|error| database_error(error.to_string()))?,
    );
    let state_machine = Arc::new(
        StateMachine::open(
            db.clone(),
            crate::lease::Lessor::min_ttl_for(config.election_timeout),
            crate::clock::Clock::system(),
        )
        .map_err(&database_error)?,
    );
    let members: Vec<MemberInfo> = config
        .initial_cluster
        .iter()
        .map(|(name, urls)| MemberInfo {
            id: config::member_id(urls, &config.initial_cluster_token),
            name: name.clone(),
            peer_ur_ls: urls
                .iter()
                .map(|url| config::url_text(url).to_string())
                .collect(),
            client_ur_ls: Vec::new(),
            is_learner: false,
        })
        .collect();
    let ids: Vec<u64> = members.iter().map(|member| member.id).collect();
    let cluster_id = config::cluster_id(&ids);

    let wtx = db
        .begin_write()
        .map_err(|error| database_error(error.to_string()))?;
    state_machine
        .restore(&wtx, &envelope)
        .map_err(&database_error)?;
    state_machine
        .bootstrap_members(&wtx, cluster_id, members)
        .map_err(&database_error)?;
    {
        // The new cluster's log starts at index 1 (see RaftLog::bootstrap): the
        // restored state is what that point holds.
        let mut writer = state_machine.mvcc.writer(&wtx);
        writer.set_consistent_index(1);
    }
    let wal = crate::open_wal(data_dir)?;
    RaftLog::bootstrap(&wtx, ids, state_machine.clone(), wal).map_err(&database_error)?;
    wtx.commit()
        .map_err(|error| database_error(error.to_string()))?;
    state_machine.mvcc.publish();
    Ok(RestoreSummary {
        source,
        revision: state_machine.mvcc.current_revision(),
        member_id: config.member_id(),
        cluster_id,
    })
}

#[cfg(test)]
mod tests {
    use proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

    use super::*;

    const LEASE_ID: i64 = 0x7e57;

    fn put(key: &str, value: &str, lease: i64) -> PutRequest {
        PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            lease,
            ..Default::default()
        }
    }

    /// A state machine with a short history: overwrites, a delete, a
    /// compaction and a leased key.
    fn source_state(dir: &Path) -> StateMachine {
        let db = Arc::new(mvcc::Db::open(&dir.join("source.redb"), 1 << 20).unwrap());
        let state_machine =
            StateMachine::open(db.clone(), 5, crate::clock::Clock::system()).unwrap();
        let wtx = db.begin_write().unwrap();
        assert!(
            state_machine
                .lessor
                .apply_grant(&wtx, LEASE_ID, 600)
                .unwrap()
        );
        {
            let mut writer = state_machine.mvcc.writer(&wtx);
            for round in 0..3 {
                for key in ["a", "b", "c"] {
                    writer.put(&put(key, &format!("{key}{round}"), 0)).unwrap();
                }
            }
            writer.compact(5).unwrap();
            writer
                .delete_range(&DeleteRangeRequest {
                    key: b"b".to_vec().into(),
                    ..Default::default()
                })
                .unwrap();
            writer.put(&put("leased", "x", LEASE_ID)).unwrap();
            writer.set_consistent_index(42);
        }
        wtx.commit().unwrap();
        state_machine.mvcc.publish();
        state_machine
    }

    /// Every key with its revisions, at the current revision and at one in
    /// the retained history.
    fn contents(state_machine: &StateMachine) -> Vec<(i64, Vec<proto::mvccpb::KeyValue>)> {
        [0, 7]
            .into_iter()
            .map(|revision| {
                let response = state_machine
                    .mvcc
                    .range(&RangeRequest {
                        key: vec![0].into(),
                        range_end: vec![0].into(),
                        revision,
                        ..Default::default()
                    })
                    .unwrap();
                (response.header.unwrap().revision, response.kvs)
            })
            .collect()
    }

    fn restored(snapshot: &[u8], dir: &Path, name: &str) -> (RestoreSummary, StateMachine) {
        let path = dir.join(format!("{name}.snapshot"));
        std::fs::write(&path, snapshot).unwrap();
        let config = MemberConfig::single(
            name,
            dir.join(name),
            "http://127.0.0.1:2379".parse().unwrap(),
            "http://127.0.0.1:2380".parse().unwrap(),
        );
        let summary = restore(&path, &config).unwrap();
        let db = Arc::new(mvcc::Db::open(&config.data_dir.join("shoal.redb"), 1 << 20).unwrap());
        let state_machine =
            StateMachine::open(db.clone(), 5, crate::clock::Clock::system()).unwrap();
        state_machine.lessor.load(&db, Vec::new()).unwrap();
        (summary, state_machine)
    }

    /// The snapshot shoal streams now (etcd's bbolt format) and the one it
    /// streamed before (its own envelope) restore to the same keys,
    /// revisions, compaction point and lease.
    #[test]
    fn both_snapshot_formats_restore_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_state(dir.path());
        let expected = contents(&source);
        assert_eq!(expected[0].0, 12, "the history's last revision");

        let etcd_format = source.etcd_snapshot().unwrap();
        assert!(bbolt::is_bbolt(&etcd_format));
        let (_, legacy_payload) = source.snapshot().unwrap();
        let legacy_format = seal(legacy_payload);

        for (name, snapshot, source_name) in [
            ("etcd-format", etcd_format, "etcd"),
            ("legacy", legacy_format, "shoal"),
        ] {
            let (summary, state_machine) = restored(&snapshot, dir.path(), name);
            assert_eq!(summary.source, source_name, "{name}");
            assert_eq!(summary.revision, 12, "{name}");
            assert_eq!(contents(&state_machine), expected, "{name}");
            assert_eq!(state_machine.mvcc.compact_revision(), 5, "{name}");
            assert_eq!(state_machine.lessor.all(), [(LEASE_ID, 600)], "{name}");
        }
    }
}
