//! The cost of one authorization check (issue 20's row: under 5 µs): a
//! million RBAC checks against an index holding the default roles and
//! 1,000 namespaces' bindings. Timing, not correctness: run on demand with
//! `cargo test --release -p apiserver --test authz_speed -- --ignored --nocapture`
//! (method and figures in BENCHMARKS.md).

use std::time::Instant;

use apiserver::User;
use apiserver::authz::rbac::Kind;
use apiserver::authz::{Authorizer, Decision, request_info};

#[test]
#[ignore = "a timing run; see BENCHMARKS.md"]
fn one_million_checks() {
    let authorizer = Authorizer::new();
    for role in apiserver::authz::bootstrap::cluster_roles() {
        let name = role["metadata"]["name"].as_str().unwrap().to_string();
        authorizer.rbac.apply(
            Kind::ClusterRole,
            &format!("/registry/clusterroles/{name}"),
            Some(&role),
        );
    }
    for binding in apiserver::authz::bootstrap::cluster_role_bindings() {
        let name = binding["metadata"]["name"].as_str().unwrap().to_string();
        authorizer.rbac.apply(
            Kind::ClusterRoleBinding,
            &format!("/registry/clusterrolebindings/{name}"),
            Some(&binding),
        );
    }
    for n in 0..1_000 {
        let binding = serde_json::json!({
            "metadata": {"name": "team-edit", "namespace": format!("team-{n}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": format!("user-{n}")}, {"kind": "Group", "name": format!("group-{n}")}]
        });
        authorizer.rbac.apply(
            Kind::RoleBinding,
            &format!("/registry/rolebindings/team-{n}/team-edit"),
            Some(&binding),
        );
    }
    let user = User {
        name: "user-500".into(),
        groups: vec!["group-7".into(), "system:authenticated".into()],
    };
    let query = Default::default();
    let allowed = request_info(
        &http::Method::GET,
        "/api/v1/namespaces/team-500/pods",
        &query,
    );
    let denied = request_info(
        &http::Method::GET,
        "/api/v1/namespaces/team-501/secrets",
        &query,
    );
    assert_eq!(
        authorizer.authorize(&allowed.attributes(&user)),
        Decision::Allow
    );
    assert!(matches!(
        authorizer.authorize(&denied.attributes(&user)),
        Decision::Deny(_)
    ));
    const N_CHECKS: u32 = 1_000_000;
    for (label, info) in [
        ("allowed (namespace binding)", &allowed),
        ("denied (every binding tried)", &denied),
    ] {
        let started = Instant::now();
        let mut n_allowed = 0u32;
        for _ in 0..N_CHECKS {
            if authorizer.authorize(&info.attributes(&user)) == Decision::Allow {
                n_allowed += 1;
            }
        }
        let elapsed = started.elapsed();
        println!(
            "{label}: {N_CHECKS} checks in {:.3} s, {:.3} µs per check ({n_allowed} allowed)",
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / f64::from(N_CHECKS)
        );
    }
}
