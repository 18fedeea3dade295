//! Progress deadlines and automatic rollback: image pull failures, crash
//! loops, unready pods, and rollbacks cut short.

use super::*;

#[test]
fn a_stalled_rollout_passes_its_deadline() {
    let mut deployment = deployment(3, "busybox:1");
    deployment.spec.as_mut().unwrap().progress_deadline_seconds = Some(10);
    let mut world = World::new(deployment);
    world.converge(10);
    set_image(&mut world.deployment, "missing:1");
    let healthy = |rs: &ReplicaSet| World::image_of(rs) == "busybox:1";
    let plan = world.sync();
    assert!(plan.recheck_after.is_some(), "a deadline to check");
    world.settle(healthy);
    for _ in 0..5 {
        world.now += 3;
        world.sync();
        world.settle(healthy);
    }
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(progress::TIMED_OUT)
    );
    let condition = progress::condition(&world.status(), PROGRESSING)
        .unwrap()
        .clone();
    assert_eq!(condition.status, "False");
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .ends_with("has timed out progressing.")
    );
    // Old pods keep serving: at most maxUnavailable (0 of 3 at 25%) lost.
    assert_eq!(world.sizes().get("busybox:1"), Some(&3));
    // Without auto-rollback nothing else happens.
    assert!(world.deployment.spec.as_ref().unwrap().template == template("missing:1"));
}

fn waiting_pod(reason: &str) -> Arc<Pod> {
    let mut pod = (*crash_looping_pod()).clone();
    let statuses = pod
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap();
    statuses[0].restart_count = 0;
    statuses[0].image = "busybox:nope".into();
    statuses[0]
        .state
        .as_mut()
        .unwrap()
        .waiting
        .as_mut()
        .unwrap()
        .reason = Some(reason.into());
    Arc::new(pod)
}

#[test]
fn an_image_that_cannot_be_pulled_is_rolled_back_without_waiting_for_the_deadline() {
    let mut deployment = auto_rollback_deployment();
    // A deadline far away: the rollback must not be the deadline's.
    deployment.spec.as_mut().unwrap().progress_deadline_seconds = Some(600);
    let mut world = World::new(deployment);
    world.converge(10);
    set_image(&mut world.deployment, "busybox:nope");
    world.sync();
    let new_uid = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:nope")
        .and_then(|rs| rs.metadata.uid.clone())
        .unwrap();
    // A first failed pull is not yet a failure; the back-off after it is.
    world
        .pods
        .insert(new_uid.clone(), vec![waiting_pod("ErrImagePull")]);
    world.now += 1;
    let plan = world.sync();
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. })),
        "one failed pull is not a failed rollout: {plan:?}"
    );
    world
        .pods
        .insert(new_uid, vec![waiting_pod("ImagePullBackOff")]);
    world.now += 1;
    let plan = world.sync();
    assert!(
        plan.actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. })),
        "{plan:?}"
    );
    let condition = progress::condition(&world.status(), rollback::ROLLED_BACK)
        .unwrap()
        .clone();
    assert_eq!(condition.reason.as_deref(), Some(rollback::REASON_IMAGE));
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .contains("busybox:nope")
    );
    world.converge(20);
    assert!(complete(&world));
    assert_eq!(
        world.deployment.spec.as_ref().unwrap().template,
        template("busybox:1")
    );
}

fn crash_looping_pod() -> Arc<Pod> {
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some("web-x-1".into()),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "web".into(),
                restart_count: 1,
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        ..ContainerStateWaiting::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    })
}

fn auto_rollback_deployment() -> Deployment {
    let mut deployment = deployment(3, "busybox:1");
    deployment.metadata.annotations =
        Some([(rollback::AUTO_ROLLBACK.to_string(), "true".to_string())].into());
    deployment.spec.as_mut().unwrap().progress_deadline_seconds = Some(10);
    deployment
}

#[test]
fn auto_rollback_goes_back_when_the_deadline_passes() {
    let mut world = World::new(auto_rollback_deployment());
    world.converge(10);
    let good = world.replica_sets[0].clone();
    assert!(
        rollback::is_fully_available(&good),
        "a completed rollout marks its replica set"
    );
    set_image(&mut world.deployment, "missing:1");
    let healthy = |rs: &ReplicaSet| World::image_of(rs) != "missing:1";
    world.sync();
    world.settle(healthy);
    let failed_hash = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "missing:1")
        .map(|rs| rollback::template_hash_of(rs).unwrap().to_string())
        .unwrap();
    let mut rolled_back = None;
    for _ in 0..10 {
        world.now += 3;
        let plan = world.sync();
        world.settle(healthy);
        if plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. }))
        {
            rolled_back = Some(plan);
            break;
        }
    }
    assert!(rolled_back.is_some(), "rolled back after the deadline");
    assert_eq!(
        world.deployment.spec.as_ref().unwrap().template,
        template("busybox:1"),
        "the template minus its hash label"
    );
    let annotations = world.deployment.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[rollback::FAILED_REVISION_HASH], failed_hash);
    assert_eq!(annotations[rollback::AUTO_ROLLBACK], "true");
    let condition = progress::condition(&world.status(), rollback::ROLLED_BACK)
        .unwrap()
        .clone();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_deref()),
        ("True", Some(rollback::REASON_DEADLINE))
    );
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .starts_with("Rolled back from revision 2 (replica set web-")
    );
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some(rollback::PROGRESSING_REASON)
    );
    assert!(
        world
            .events
            .iter()
            .any(|event| event.starts_with("RolledBack: Rolled back from revision 2")),
        "{:?}",
        world.events
    );
    world.converge(20);
    assert!(complete(&world));
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 3), ("missing:1".to_string(), 0)])
    );
    assert_eq!(
        world.deployment.metadata.annotations.as_ref().unwrap()[REVISION],
        "3"
    );
    assert!(
        progress::condition(&world.status(), rollback::ROLLED_BACK).is_some(),
        "kept until the next rollout"
    );

    // The same bad template again is not rolled out.
    set_image(&mut world.deployment, "missing:1");
    world.converge(10);
    assert_eq!(
        world.sizes(),
        BTreeMap::from([("busybox:1".to_string(), 3), ("missing:1".to_string(), 0)])
    );
    assert_eq!(
        world.progressing_reason().as_deref(),
        Some("RolloutBlocked")
    );
    // Another template is, and starts afresh.
    set_image(&mut world.deployment, "busybox:2");
    world.converge(20);
    assert!(complete(&world));
    assert_eq!(world.sizes().get("busybox:2"), Some(&3));
    assert!(progress::condition(&world.status(), rollback::ROLLED_BACK).is_none());
}

#[test]
fn auto_rollback_goes_back_when_new_pods_crash_loop() {
    let mut world = World::new(auto_rollback_deployment());
    world
        .deployment
        .spec
        .as_mut()
        .unwrap()
        .progress_deadline_seconds = Some(600);
    world.converge(10);
    set_image(&mut world.deployment, "busybox:crash");
    world.sync();
    world.settle(|rs| World::image_of(rs) == "busybox:1");
    let new_uid = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:crash")
        .and_then(|rs| rs.metadata.uid.clone())
        .unwrap();
    world.now += 1;
    let plan = world.sync();
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. })),
        "healthy so far"
    );
    world.pods.insert(new_uid, vec![crash_looping_pod()]);
    let plan = world.sync();
    assert!(
        plan.actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. })),
        "{plan:?}"
    );
    let condition = progress::condition(&world.status(), rollback::ROLLED_BACK)
        .unwrap()
        .clone();
    assert_eq!(
        condition.reason.as_deref(),
        Some(rollback::REASON_CRASH_LOOP)
    );
    assert!(
        condition
            .message
            .as_deref()
            .unwrap()
            .contains("CrashLoopBackOff")
    );
    world.converge(20);
    assert!(complete(&world));
}

#[test]
fn without_the_annotation_or_a_good_revision_there_is_no_rollback() {
    // Off: a crash loop is only what the status shows.
    let mut world = World::new(deployment(2, "busybox:1"));
    world.converge(10);
    assert!(
        !rollback::is_fully_available(&world.replica_sets[0]),
        "no marks when off"
    );
    set_image(&mut world.deployment, "busybox:crash");
    world.sync();
    let uid = world.replica_sets[1].metadata.uid.clone().unwrap();
    world.pods.insert(uid, vec![crash_looping_pod()]);
    let plan = world.sync();
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. }))
    );
    // On, but the first rollout fails: nothing to go back to.
    let mut world = World::new(auto_rollback_deployment());
    world.deployment.spec.as_mut().unwrap().template = template("busybox:crash");
    world.sync();
    let uid = world.replica_sets[0].metadata.uid.clone().unwrap();
    world.pods.insert(uid, vec![crash_looping_pod()]);
    let plan = world.sync();
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::RollBack { .. }))
    );
}

#[test]
fn a_restart_counts_as_a_crash_loop_at_three() {
    let mut pod = (*crash_looping_pod()).clone();
    let status = &mut pod
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0];
    status.state = None;
    status.restart_count = 2;
    let deployment = auto_rollback_deployment();
    let replica_set = ReplicaSet::default();
    let now = at(0);
    let healthy = k8s_openapi::api::apps::v1::DeploymentStatus::default();
    assert_eq!(
        rollback::failure(
            &deployment,
            &healthy,
            &replica_set,
            &[Arc::new(pod.clone())],
            &now
        ),
        None
    );
    pod.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .restart_count = 3;
    let failure =
        rollback::failure(&deployment, &healthy, &replica_set, &[Arc::new(pod)], &now).unwrap();
    assert_eq!(failure.reason, rollback::REASON_RESTARTS);
}

#[test]
fn a_pod_not_ready_past_the_deadline_fails_the_rollout() {
    let deployment = auto_rollback_deployment();
    let pod = Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            creation_timestamp: Some(at(0)),
            ..ObjectMeta::default()
        },
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    });
    let status = k8s_openapi::api::apps::v1::DeploymentStatus::default();
    let replica_set = ReplicaSet::default();
    assert_eq!(
        rollback::failure(
            &deployment,
            &status,
            &replica_set,
            std::slice::from_ref(&pod),
            &at(10)
        ),
        None
    );
    let failure = rollback::failure(&deployment, &status, &replica_set, &[pod], &at(11)).unwrap();
    assert_eq!(failure.reason, rollback::REASON_NOT_READY);
}

#[test]
fn an_orphan_selector_that_selects_everything_is_refused() {
    let mut deployment = deployment(1, "busybox:1");
    deployment.spec.as_mut().unwrap().selector = LabelSelector::default();
    let world = World::new(deployment);
    let plan = world.plan();
    assert!(matches!(
        &plan.actions[0],
        Action::Event {
            reason: "SelectingAll",
            ..
        }
    ));
    assert!(
        !plan
            .actions
            .iter()
            .any(|action| matches!(action, Action::Create { .. }))
    );
}

#[test]
fn min_ready_seconds_follows_the_deployment() {
    let mut world = World::new(deployment(1, "busybox:1"));
    world.converge(10);
    world.deployment.spec.as_mut().unwrap().min_ready_seconds = Some(5);
    world.sync();
    assert_eq!(
        world.replica_sets[0]
            .spec
            .as_ref()
            .unwrap()
            .min_ready_seconds,
        Some(5)
    );
}

#[test]
fn a_thousand_replica_rollout_takes_a_handful_of_steps() {
    let mut world = World::new(deployment(1000, "busybox:1"));
    world.converge(10);
    set_image(&mut world.deployment, "busybox:2");
    let rounds = world.converge(40);
    assert!(complete(&world));
    assert!(rounds <= 12, "{rounds} rounds");
}

#[test]
fn a_recreate_cut_short_after_any_write_is_finished_by_the_next() {
    let mut deployment = deployment(4, "busybox:1");
    deployment.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    let mut reference = World::new(deployment);
    reference.converge(10);
    set_image(&mut reference.deployment, "busybox:2");
    for _step in 0..10 {
        let plan = reference.plan();
        if plan.actions.is_empty() {
            break;
        }
        for limit in 0..plan.actions.len() {
            let mut cut = reference.clone();
            cut.apply(&plan, limit);
            // Recreate never asks for new pods while old ones exist.
            let new_asked = cut
                .replica_sets
                .iter()
                .any(|rs| World::image_of(rs) == "busybox:2" && spec_replicas(rs) > 0);
            let old_exist = cut
                .replica_sets
                .iter()
                .any(|rs| World::image_of(rs) == "busybox:1" && rolling::status_replicas(rs) > 0);
            assert!(
                !(new_asked && old_exist),
                "cut after {limit}: {:?}",
                cut.sizes()
            );
            cut.converge(20);
            assert!(complete(&cut), "cut after {limit}: {:?}", cut.sizes());
            assert_eq!(cut.sizes().get("busybox:2"), Some(&4));
        }
        reference.apply(&plan, usize::MAX);
        reference.settle_all();
        reference.now += 1;
    }
    assert!(complete(&reference));
}

#[test]
fn an_automatic_rollback_cut_short_does_not_roll_back_twice() {
    let mut world = World::new(auto_rollback_deployment());
    world.converge(10);
    set_image(&mut world.deployment, "busybox:crash");
    world.sync();
    world.settle(|rs| World::image_of(rs) == "busybox:1");
    let uid = world
        .replica_sets
        .iter()
        .find(|rs| World::image_of(rs) == "busybox:crash")
        .and_then(|rs| rs.metadata.uid.clone())
        .unwrap();
    world.pods.insert(uid, vec![crash_looping_pod()]);
    let plan = world.plan();
    let rollback_at = plan
        .actions
        .iter()
        .position(|action| matches!(action, Action::RollBack { .. }))
        .expect("a rollback");
    // Only the template was written: the next sync carries on from there.
    world.apply(&plan, rollback_at + 1);
    assert_eq!(
        world.deployment.spec.as_ref().unwrap().template,
        template("busybox:1")
    );
    for _ in 0..20 {
        world.settle_all();
        let plan = world.sync();
        assert!(
            !plan
                .actions
                .iter()
                .any(|action| matches!(action, Action::RollBack { .. })),
            "no second rollback: {plan:?}"
        );
        world.now += 1;
    }
    assert!(complete(&world));
    assert_eq!(
        world.sizes(),
        BTreeMap::from([
            ("busybox:1".to_string(), 3),
            ("busybox:crash".to_string(), 0)
        ])
    );
}
