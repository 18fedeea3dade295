//! The two rollout strategies: RollingUpdate (within maxSurge and
//! maxUnavailable) and Recreate (old pods gone before new ones start).

use super::*;

impl Sync<'_> {
    /// Upstream's `rolloutRolling`.
    pub(super) fn rollout_rolling(&mut self) {
        let new = self.new_replica_set(true);
        let Some(new) = new else {
            return;
        };
        let old = self.old_indices(Some(new));
        if self.reconcile_new(new, &old) {
            self.sync_rollout_status(Some(new));
            return;
        }
        let active_old = self.active(&old);
        if self.reconcile_old(new, &active_old, &old) {
            self.sync_rollout_status(Some(new));
            return;
        }
        if progress::deployment_complete(self.deployment, &self.status) {
            self.cleanup(&old);
        }
        self.sync_rollout_status(Some(new));
    }

    /// Upstream's `reconcileNewReplicaSet`; true when it scaled.
    pub(super) fn reconcile_new(&mut self, new: usize, old: &[usize]) -> bool {
        let desired = self.desired();
        let size = spec_replicas(&self.world[new]);
        if size == desired {
            return false;
        }
        if size > desired {
            self.scale_and_record(new, desired);
            return true;
        }
        let all_size = self.spec_sum(old) + size;
        let target = rolling::new_replica_set_target(self.deployment, all_size, size);
        self.scale_and_record(new, target);
        target != size
    }

    /// Upstream's `reconcileOldReplicaSets`; true when it scaled down.
    pub(super) fn reconcile_old(
        &mut self,
        new: usize,
        active_old: &[usize],
        old: &[usize],
    ) -> bool {
        if self.spec_sum(active_old) == 0 {
            return false;
        }
        let mut all: Vec<usize> = old.to_vec();
        all.push(new);
        let all_pods = self.spec_sum(&all);
        let min_available = self.desired() - rolling::max_unavailable(self.deployment);
        let new_unavailable =
            spec_replicas(&self.world[new]) - rolling::available_replicas(&self.world[new]);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy(old, max_scaled_down);
        let scaled = self.scale_down_old_for_rolling(&all, old);
        cleaned + scaled > 0
    }

    /// Upstream's `cleanupUnhealthyReplicas`: first the old pods that are
    /// not available anyway, oldest ReplicaSet first.
    pub(super) fn cleanup_unhealthy(&mut self, old: &[usize], max_cleanup: i32) -> i32 {
        let mut total = 0;
        for &index in old {
            if total >= max_cleanup {
                break;
            }
            let size = spec_replicas(&self.world[index]);
            let available = rolling::available_replicas(&self.world[index]);
            if size == 0 || size <= available {
                continue;
            }
            let count = (max_cleanup - total).min(size - available);
            self.scale_and_record(index, size - count);
            total += count;
        }
        total
    }

    /// Upstream's `scaleDownOldReplicaSetsForRollingUpdate`: as many old
    /// pods as availability above the minimum allows, oldest first.
    pub(super) fn scale_down_old_for_rolling(&mut self, all: &[usize], old: &[usize]) -> i32 {
        let min_available = self.desired() - rolling::max_unavailable(self.deployment);
        let available: i32 = all
            .iter()
            .map(|index| rolling::available_replicas(&self.world[*index]))
            .sum();
        if available <= min_available {
            return 0;
        }
        let wanted = available - min_available;
        let mut total = 0;
        for &index in old {
            if total >= wanted {
                break;
            }
            let size = spec_replicas(&self.world[index]);
            if size == 0 {
                continue;
            }
            let count = size.min(wanted - total);
            self.scale_and_record(index, size - count);
            total += count;
        }
        total
    }

    /// Upstream's `rolloutRecreate`: every old pod gone before the new
    /// ReplicaSet grows.
    pub(super) fn rollout_recreate(&mut self) {
        let mut new = self.new_replica_set(false);
        let old = self.old_indices(new);
        let mut scaled_down = false;
        for index in self.active(&old) {
            self.scale_and_record(index, 0);
            scaled_down = true;
        }
        if scaled_down || self.old_pods_running(&old) {
            self.sync_rollout_status(new);
            return;
        }
        if new.is_none() {
            new = self.new_replica_set(true);
        }
        if let Some(index) = new {
            let desired = self.desired();
            self.scale_and_record(index, desired);
        }
        if progress::deployment_complete(self.deployment, &self.status) {
            let old = self.old_indices(new);
            self.cleanup(&old);
        }
        self.sync_rollout_status(new);
    }

    pub(super) fn old_pods_running(&self, old: &[usize]) -> bool {
        if old
            .iter()
            .map(|index| rolling::status_replicas(&self.world[*index]))
            .sum::<i32>()
            > 0
        {
            return true;
        }
        old.iter().any(|index| {
            let uid = self.world[*index]
                .metadata
                .uid
                .as_deref()
                .unwrap_or_default();
            self.pods.get(uid).into_iter().flatten().any(|pod| {
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|status| status.phase.as_deref());
                !matches!(phase, Some("Failed" | "Succeeded"))
            })
        })
    }
}
