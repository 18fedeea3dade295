//! Rollouts: creation, rolling and recreate steps within their bounds, a
//! sync cut short, proportional scaling, history, change cause, pause.

use super::*;

#[test]
fn a_new_deployment_creates_its_replica_set_and_completes() {
    let mut world = World::new(deployment(3, "busybox:1"));
    let plan = world.sync();
    let Action::Create { replica_set, event } = &plan.actions[0] else {
        panic!("first a create: {:?}", plan.actions);
    };
    let hash = replica_set.metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH].clone();
    assert_eq!(
        replica_set.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    let spec = replica_set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        spec.selector.match_labels.as_ref().unwrap()[POD_TEMPLATE_HASH],
        hash
    );
    let template_labels = spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(template_labels[POD_TEMPLATE_HASH], hash);
    assert_eq!(template_labels["app"], "web");
    let annotations = replica_set.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[REVISION], "1");
    assert_eq!(annotations[DESIRED_REPLICAS], "3");
    assert_eq!(annotations[MAX_REPLICAS], "4");
    let owner = &replica_set.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Deployment", "d-uid", Some(true))
    );
    assert_eq!(
        event.as_deref(),
        Some(format!("Scaled up replica set web-{hash} from 0 to 3").as_str())
    );
    assert_eq!(
        world.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
        "1"
    );
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::NEW_RS_CREATED)
    );
    let available = progress::condition(&world.status(), progress::AVAILABLE)
        .unwrap()
        .clone();
    assert_eq!(
        available.reason.as_deref(),
        Some(progress::MINIMUM_UNAVAILABLE)
    );

    world.settle_all();
    world.now += 1;
    world.sync();
    let status = world.status();
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas,
            status.unavailable_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3), Some(0))
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::NEW_RS_AVAILABLE)
    );
    let message = progress::condition(&status, PROGRESSING)
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert_eq!(
        message,
        format!("ReplicaSet \"web-{hash}\" has successfully progressed.")
    );
    assert_eq!(
        progress::condition(&status, progress::AVAILABLE)
            .unwrap()
            .reason
            .as_deref(),
        Some(progress::MINIMUM_AVAILABLE)
    );
    assert!(
        world.plan().actions.is_empty(),
        "a settled deployment needs nothing"
    );
}

#[test]
fn a_rolling_update_respects_surge_and_unavailability_at_every_step() {
    let mut world = World::new(deployment(10, "busybox:1"));
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    // Availability lags one step behind the scale (pods need a sync to be
    // ready), so the minimum holds on what the ReplicaSets report.
    let mut steps = 0;
    loop {
        let plan = world.sync();
        check_bounds(&world);
        let available: i32 = world
            .replica_sets
            .iter()
            .map(rolling::available_replicas)
            .sum();
        let asked_old: i32 = world
            .replica_sets
            .iter()
            .filter(|rs| World::image_of(rs) == "busybox:1")
            .map(spec_replicas)
            .sum();
        let available_new: i32 = world
            .replica_sets
            .iter()
            .filter(|rs| World::image_of(rs) == "busybox:2")
            .map(rolling::available_replicas)
            .sum();
        assert!(
            asked_old + available_new >= 8,
            "at most 25% (2) unavailable: {:?} (available {available})",
            world.sizes()
        );
        world.settle_all();
        world.now += 1;
        steps += 1;
        if plan.actions.is_empty() || steps > 20 {
            break;
        }
    }
    assert!(complete(&world), "{:?}", world.sizes());
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 0), ("busybox:2".to_string(), 10)])
    );
    assert_eq!(
        world.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
        "2"
    );
    assert!(
        world
            .events
            .iter()
            .any(|event| event.starts_with("Scaled down replica set web-")
                && event.ends_with("from 10 to 8")),
        "{:?}",
        world.events
    );
    assert!(
        world
            .events
            .iter()
            .any(|event| event.starts_with("Scaled up replica set web-")
                && event.ends_with("from 0 to 3")),
        "{:?}",
        world.events
    );
}

#[test]
fn a_sync_cut_short_after_any_write_is_finished_by_the_next() {
    // For every step of a rollout and every prefix of its plan: apply the
    // prefix, then sync again from there; the rollout must end where an
    // uninterrupted one ends, within its bounds all the way.
    let mut reference = World::new(deployment(7, "busybox:1"));
    set_bounds(
        &mut reference.deployment,
        IntOrString::Int(2),
        IntOrString::Int(1),
    );
    reference.converge(10);
    set_image(&mut reference.deployment, "busybox:2");
    let mut cuts = 0;
    for _step in 0..30 {
        let plan = reference.plan();
        if plan.actions.is_empty() {
            break;
        }
        for limit in 0..plan.actions.len() {
            let mut cut = reference.clone();
            cut.apply(&plan, limit);
            check_bounds(&cut);
            cut.converge(40);
            assert!(complete(&cut), "cut after {limit}: {:?}", cut.sizes());
            assert_eq!(cut.sizes().get("busybox:2"), Some(&7));
            assert_eq!(cut.sizes().get("busybox:1"), Some(&0));
            assert_eq!(
                cut.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
                "2"
            );
            cuts += 1;
        }
        reference.apply(&plan, usize::MAX);
        reference.settle_all();
        reference.now += 1;
    }
    assert!(complete(&reference));
    assert!(cuts > 5, "the rollout has several writes to cut ({cuts})");
}

#[test]
fn recreate_scales_the_old_down_and_waits_for_its_pods() {
    let mut deployment = deployment(3, "busybox:1");
    deployment.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    let mut world = World::new(deployment);
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    world.sync();
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 0)]),
        "old down first, no new yet"
    );
    // The old ReplicaSet's pods are still terminating.
    let old_uid = world.replica_sets[0].metadata.uid.clone().unwrap();
    world.pods.insert(
        old_uid.clone(),
        vec![Arc::new(Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        })],
    );
    world.settle_all();
    world.sync();
    assert_eq!(
        world.replica_sets.len(),
        1,
        "no new pods while old ones run"
    );
    world.pods.remove(&old_uid);
    world.sync();
    assert_eq!(world.sizes().get("busybox:2"), Some(&3));
    world.converge(10);
    assert!(complete(&world), "{:?} {:?}", world.sizes(), world.status());
}

#[test]
fn scaling_during_a_rollout_is_proportional() {
    // Upstream's example: 10 replicas, maxSurge 3, mid-rollout with 8 old
    // and 5 new, scaled to 15: the 5 more split by share (3 old, 2 new).
    let mut deployment = deployment(10, "busybox:1");
    set_bounds(&mut deployment, IntOrString::Int(3), IntOrString::Int(2));
    let mut world = World::new(deployment);
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    // As upstream: the new one is created at the surge, and the old one
    // loses what is above the minimum in the same sync.
    world.sync();
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 8), ("busybox:2".to_string(), 3)])
    );
    world.settle(|rs| World::image_of(rs) == "busybox:1");
    world.sync();
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 8), ("busybox:2".to_string(), 5)])
    );
    set_replicas(&mut world.deployment, 15);
    let plan = world.sync();
    // 15 + 3 surge = 18 allowed, 13 asked: 8*18/13 = 11.08 → 11 (+3);
    // 5*18/13 = 6.9 → 7, capped at what is left (+2).
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 11), ("busybox:2".to_string(), 7)]),
        "{plan:?}"
    );
    for rs in &world.replica_sets {
        let annotations = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            (
                annotations[DESIRED_REPLICAS].as_str(),
                annotations[MAX_REPLICAS].as_str()
            ),
            ("15", "18")
        );
    }
    // And down to 5: 5 + 2 (25% rounds up) = ... surge is 3: 8 allowed.
    set_replicas(&mut world.deployment, 5);
    world.sync();
    let total: i32 = world.sizes().values().sum();
    assert_eq!(total, 8, "{:?}", world.sizes());
    world.converge(40);
    assert!(complete(&world));
    assert_eq!(world.sizes().get("busybox:2"), Some(&5));
}

#[test]
fn scaling_a_settled_deployment_scales_its_one_replica_set() {
    let mut world = World::new(deployment(3, "busybox:1"));
    world.converge(10);
    set_replicas(&mut world.deployment, 1000);
    world.sync();
    assert_eq!(world.sizes().get("busybox:1"), Some(&1000));
    assert!(world.events.last().unwrap().ends_with("from 3 to 1000"));
    set_replicas(&mut world.deployment, 0);
    world.sync();
    assert_eq!(world.sizes().get("busybox:1"), Some(&0));
    assert!(
        world
            .events
            .last()
            .unwrap()
            .starts_with("Scaled down replica set")
    );
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let mut deployment = deployment(2, "image:0");
    deployment.spec.as_mut().unwrap().revision_history_limit = Some(2);
    let mut world = World::new(deployment);
    world.converge(10);
    for version in 1..=5 {
        set_image(&mut world.deployment, &format!("image:{version}"));
        world.converge(20);
        assert!(complete(&world));
    }
    let mut images: Vec<String> = world.replica_sets.iter().map(World::image_of).collect();
    images.sort();
    assert_eq!(
        images,
        ["image:3", "image:4", "image:5"],
        "the new one and two old"
    );
    let mut revisions: Vec<i64> = world
        .replica_sets
        .iter()
        .map(|rs| core::revision(&rs.metadata))
        .collect();
    revisions.sort();
    assert_eq!(revisions, [4, 5, 6]);
}

#[test]
fn going_back_to_an_old_template_reuses_its_replica_set_with_a_new_revision() {
    let mut world = World::new(deployment(2, "busybox:1"));
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    world.converge(20);
    set_image(&mut world.deployment, "busybox:3");
    world.converge(20);
    // `kubectl rollout undo --to-revision=1`.
    set_image(&mut world.deployment, "busybox:1");
    world.converge(20);
    assert_eq!(world.replica_sets.len(), 3, "no new replica set");
    let first = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:1")
        .unwrap();
    let annotations = first.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[REVISION], "4");
    assert_eq!(annotations[core::REVISION_HISTORY], "1");
    assert_eq!(
        world.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
        "4"
    );
    set_image(&mut world.deployment, "busybox:2");
    world.converge(20);
    let second = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:2")
        .unwrap();
    assert_eq!(
        second.metadata.annotations.as_ref().unwrap()[core::REVISION_HISTORY],
        "2"
    );
    assert_eq!(second.metadata.annotations.as_ref().unwrap()[REVISION], "5");
}

#[test]
fn change_cause_is_copied_to_the_new_replica_set() {
    let mut deployment = deployment(1, "busybox:1");
    deployment.metadata.annotations = Some(
        [
            (core::CHANGE_CAUSE.to_string(), "first".to_string()),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
        ]
        .into(),
    );
    let mut world = World::new(deployment);
    world.converge(10);
    let annotations = world.replica_sets[0].metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[core::CHANGE_CAUSE], "first");
    assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll_out() {
    let mut world = World::new(deployment(4, "busybox:1"));
    world.converge(10);
    world.deployment.spec.as_mut().unwrap().paused = Some(true);
    world.sync();
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::PAUSED)
    );
    let paused = progress::condition(&world.status(), PROGRESSING)
        .unwrap()
        .clone();
    assert_eq!(
        (paused.status.as_str(), paused.message.as_deref()),
        ("Unknown", Some("Deployment is paused"))
    );
    set_image(&mut world.deployment, "busybox:2");
    set_replicas(&mut world.deployment, 6);
    world.converge(10);
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 6)])
    );
    assert_eq!(
        world.status().observed_generation,
        world.deployment.metadata.generation
    );
    world.deployment.spec.as_mut().unwrap().paused = Some(false);
    world.sync();
    assert!(world.replica_sets.len() == 2, "resumed: the rollout starts");
    world.converge(20);
    assert!(complete(&world));
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::NEW_RS_AVAILABLE)
    );
}
