//! Automatic compaction, run by whichever member leads: etcd's periodic and
//! revision compactors. Compactions are ordinary requests through raft.

use std::collections::VecDeque;
use std::sync::Weak;
use std::time::{Duration, Instant};

use proto::etcdserverpb::CompactionRequest;

use crate::Member;
use crate::config::AutoCompaction;

/// etcd's revision compactor looks every five minutes.
const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// Runs until the member is dropped.
pub async fn run(member: Weak<Member>, policy: AutoCompaction) {
    match policy {
        AutoCompaction::Periodic(retention) => run_periodic(member, retention).await,
        AutoCompaction::Revision(keep) => run_revision(member, keep).await,
    }
}

async fn run_periodic(member: Weak<Member>, retention: Duration) {
    // Sample the revision ten times per retention window; compact every
    // min(retention, 1 hour) to the newest sample at least `retention` old.
    let sample_every = (retention / 10).max(Duration::from_millis(100));
    let compact_every = retention.min(Duration::from_secs(3600));
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut last_compaction = Instant::now();
    loop {
        tokio::time::sleep(sample_every).await;
        let Some(member) = member.upgrade() else {
            return;
        };
        if !member.is_leader() {
            samples.clear();
            last_compaction = Instant::now();
            continue;
        }
        let now = Instant::now();
        samples.push_back((now, member.current_header().revision));
        if now.duration_since(last_compaction) < compact_every {
            continue;
        }
        let target = samples
            .iter()
            .rev()
            .find(|(taken, _)| now.duration_since(*taken) >= retention)
            .map(|(_, revision)| *revision);
        let Some(target) = target else { continue };
        last_compaction = now;
        while samples
            .front()
            .is_some_and(|(taken, _)| now.duration_since(*taken) > retention * 2)
        {
            samples.pop_front();
        }
        compact(&member, target).await;
    }
}

async fn run_revision(member: Weak<Member>, keep: i64) {
    loop {
        tokio::time::sleep(REVISION_CHECK_INTERVAL).await;
        let Some(member) = member.upgrade() else {
            return;
        };
        if !member.is_leader() {
            continue;
        }
        let target = member.current_header().revision - keep;
        compact(&member, target).await;
    }
}

async fn compact(member: &Member, revision: i64) {
    if revision <= member.compact_revision() {
        return;
    }
    let request = CompactionRequest {
        revision,
        physical: true,
    };
    match member.compact(request).await {
        Ok(_) => tracing::info!(revision, "auto-compacted"),
        Err(error) => tracing::warn!(revision, %error, "auto-compaction failed"),
    }
}
