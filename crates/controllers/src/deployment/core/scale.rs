//! Scaling without a rollout: upstream's `sync` and `scale`, with
//! proportional scaling of the active ReplicaSets when a Deployment is
//! resized mid-rollout.

use super::*;

impl Sync<'_> {
    /// Upstream's `isScalingEvent`: an active ReplicaSet was sized for a
    /// different replica count.
    pub(super) fn is_scaling_event(&mut self) -> bool {
        // As upstream, finding the new ReplicaSet also brings its revision
        // up to date.
        self.new_replica_set(false);
        let desired = self.desired();
        let all: Vec<usize> = (0..self.world.len()).collect();
        self.active(&all).into_iter().any(|index| {
            self.world[index]
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(DESIRED_REPLICAS))
                .and_then(|text| text.parse::<i32>().ok())
                .is_some_and(|annotated| annotated != desired)
        })
    }

    /// Upstream's `sync`: scale (proportionally in a rollout), clean up a
    /// paused Deployment's history, update the counts.
    pub(super) fn scale_only(&mut self) {
        let new = self.new_replica_set(false);
        let old = self.old_indices(new);
        self.scale(new, &old);
        if self.paused() {
            self.cleanup(&old);
        }
        self.sync_status(new);
    }

    pub(super) fn scale_replica_set(&mut self, index: usize, new_scale: i32, operation: &str) {
        let desired = self.desired();
        let max = desired + rolling::max_surge(self.deployment);
        let replica_set = &mut self.world[index];
        let old_scale = spec_replicas(replica_set);
        let size_changed = old_scale != new_scale;
        if !size_changed && !replicas_annotations_need_update(replica_set, desired, max) {
            return;
        }
        replica_set
            .spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(new_scale);
        set_replicas_annotations(replica_set, desired, max);
        let name = replica_set.metadata.name.clone().unwrap_or_default();
        let event = size_changed.then(|| {
            format!("Scaled {operation} replica set {name} from {old_scale} to {new_scale}")
        });
        self.update(index, event);
    }

    pub(super) fn scale_and_record(&mut self, index: usize, new_scale: i32) {
        let operation = if spec_replicas(&self.world[index]) > new_scale {
            "down"
        } else {
            "up"
        };
        self.scale_replica_set(index, new_scale, operation);
    }

    /// Upstream's `scale`.
    pub(super) fn scale(&mut self, new: Option<usize>, old: &[usize]) {
        let desired = self.desired();
        if let Some(index) = self.active_or_latest(new, old) {
            if spec_replicas(&self.world[index]) != desired {
                self.scale_and_record(index, desired);
            }
            return;
        }
        if let Some(index) = new
            && self.is_saturated(index)
        {
            for old_index in self.active(old) {
                self.scale_and_record(old_index, 0);
            }
            return;
        }
        if rolling::is_recreate(self.deployment) {
            return;
        }
        let mut all: Vec<usize> = old.to_vec();
        all.extend(new);
        let mut all = self.active(&all);
        let current = self.spec_sum(&all);
        let allowed = if desired > 0 {
            desired + rolling::max_surge(self.deployment)
        } else {
            0
        };
        let to_add = allowed - current;
        let operation = if to_add > 0 {
            // Largest first; the newer of two the same size.
            all.sort_by(|a, b| {
                let (a, b) = (&self.world[*a], &self.world[*b]);
                spec_replicas(b)
                    .cmp(&spec_replicas(a))
                    .then_with(|| creation_key(b).cmp(&creation_key(a)))
            });
            "up"
        } else if to_add < 0 {
            // Largest first; the older of two the same size.
            all.sort_by(|a, b| {
                let (a, b) = (&self.world[*a], &self.world[*b]);
                spec_replicas(b)
                    .cmp(&spec_replicas(a))
                    .then_with(|| creation_key(a).cmp(&creation_key(b)))
            });
            "down"
        } else {
            ""
        };
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(all.len());
        for index in &all {
            let current = spec_replicas(&self.world[*index]);
            if to_add != 0 {
                let proportion = self.proportion(*index, to_add, added);
                sizes.push(current + proportion);
                added += proportion;
            } else {
                sizes.push(current);
            }
        }
        if to_add != 0 && !sizes.is_empty() {
            // What rounding left goes to the largest.
            sizes[0] = (sizes[0] + to_add - added).max(0);
        }
        for (index, size) in all.into_iter().zip(sizes) {
            self.scale_replica_set(index, size, operation);
        }
    }

    /// Upstream's `GetReplicaSetProportion`.
    pub(super) fn proportion(&self, index: usize, to_add: i32, added: i32) -> i32 {
        let replica_set = &self.world[index];
        let size = spec_replicas(replica_set);
        if size == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(replica_set);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    /// Upstream's `getReplicaSetFraction`: the ReplicaSet's share of the new
    /// size, by the size it had when the Deployment last sized it.
    pub(super) fn fraction(&self, replica_set: &ReplicaSet) -> i32 {
        let size = spec_replicas(replica_set);
        let desired = self.desired();
        if desired == 0 {
            return -size;
        }
        let deployment_replicas = desired + rolling::max_surge(self.deployment);
        let annotated = replica_set
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(MAX_REPLICAS))
            .and_then(|text| text.parse::<i32>().ok())
            .unwrap_or_else(|| self.read_status.replicas.unwrap_or(0));
        if annotated == 0 {
            return 0;
        }
        let scaled = f64::from(size) * f64::from(deployment_replicas) / f64::from(annotated);
        scaled.round() as i32 - size
    }

    /// Upstream's `FindActiveOrLatest`: the only active ReplicaSet, or the
    /// latest when none is.
    pub(super) fn active_or_latest(&self, new: Option<usize>, old: &[usize]) -> Option<usize> {
        if new.is_none() && old.is_empty() {
            return None;
        }
        let mut all: Vec<usize> = old.to_vec();
        all.extend(new);
        let active = self.active(&all);
        match active.len() {
            0 => new.or_else(|| {
                old.iter()
                    .copied()
                    .max_by_key(|index| creation_key(&self.world[*index]))
            }),
            1 => Some(active[0]),
            _ => None,
        }
    }

    pub(super) fn is_saturated(&self, index: usize) -> bool {
        let replica_set = &self.world[index];
        let desired = self.desired();
        let annotated = replica_set
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(DESIRED_REPLICAS))
            .and_then(|text| text.parse::<i32>().ok());
        annotated == Some(desired)
            && spec_replicas(replica_set) == desired
            && rolling::available_replicas(replica_set) == desired
    }
}
