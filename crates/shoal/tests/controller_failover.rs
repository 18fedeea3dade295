//! The controllers under leader election: two `shoal controllers`
//! processes beside a server started with `--disable-controllers`; one
//! leads (the `kube-system/kube-controller-manager` Lease names it), the
//! other waits. The leader is killed with SIGKILL while its ReplicaSet is
//! still being filled; the other takes the Lease over once it expires and
//! finishes from what is stored: the ReplicaSet ends with exactly its
//! replicas, each pod owned once, none made twice.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kube::{Kubectl, KubectlRelease, Shoal};

const REPLICAS: usize = 1000;

struct Manager {
    child: Child,
    log: std::path::PathBuf,
}

impl Manager {
    fn start(shoal: &Shoal, name: &str) -> Manager {
        let log = shoal.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("controllers")
            .arg(format!("--kubeconfig={}", shoal.kubeconfig.display()))
            .arg("--log-level=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the log file"))
            .stderr(file)
            .spawn()
            .expect("start shoal controllers");
        Manager { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn holder(kubectl: &Kubectl, dir: &Path) -> String {
    let output = kubectl.run(
        "kubectl get lease -n kube-system kube-controller-manager -o jsonpath={.spec.holderIdentity}",
        dir,
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The ReplicaSet's pods: (total, owned by it, not being deleted).
fn pods(kubectl: &Kubectl, dir: &Path, uid: &str) -> (usize, usize, usize) {
    let out = kubectl.ok(
        "kubectl get pods -l app=failover -o jsonpath='{range .items[*]}{.metadata.ownerReferences[0].uid} {.metadata.deletionTimestamp}{\"\\n\"}{end}'",
        dir,
    );
    let lines: Vec<&str> = out.lines().filter(|line| !line.trim().is_empty()).collect();
    let owned = lines.iter().filter(|line| line.starts_with(uid)).count();
    let live = lines
        .iter()
        .filter(|line| line.split_whitespace().nth(1).is_none())
        .count();
    (lines.len(), owned, live)
}

#[test]
fn a_new_leader_finishes_what_the_killed_one_started() {
    let shoal = Shoal::start_with(&[
        "--disable-agent",
        "--disable-scheduler",
        "--disable-controllers",
    ]);
    let dir = shoal.dir.path().to_path_buf();
    let kubectl = Kubectl::new(KubectlRelease::V1_32, &shoal);
    let mut managers = vec![
        Manager::start(&shoal, "first"),
        Manager::start(&shoal, "second"),
    ];
    let pids: Vec<u32> = managers.iter().map(|m| m.child.id()).collect();

    // One of them leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let holder = holder(&kubectl, &dir);
        if let Some(index) = pids
            .iter()
            .position(|pid| holder.ends_with(&format!("_{pid}")))
        {
            break index;
        }
        assert!(
            Instant::now() < deadline,
            "no controller manager took the lease (holder {holder:?}):\n{}\n{}",
            managers[0].log(),
            managers[1].log()
        );
        thread::sleep(Duration::from_millis(200));
    };

    let manifest = dir.join("rs.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: failover\nspec:\n  replicas: {REPLICAS}\n  selector:\n    matchLabels:\n      app: failover\n  template:\n    metadata:\n      labels:\n        app: failover\n    spec:\n      containers:\n      - name: main\n        image: registry.k8s.io/pause:3.10\n"
        ),
    )
    .expect("write the manifest");
    kubectl.ok(&format!("kubectl apply -f {}", manifest.display()), &dir);
    let uid = kubectl.ok("kubectl get rs failover -o jsonpath={.metadata.uid}", &dir);

    // Kill the leader once it has started, and before it is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (total, _, _) = pods(&kubectl, &dir, &uid);
        if total > 0 {
            // Usually a few hundred: the leader creates in growing batches.
            eprintln!("killing the leader after it made {total} of {REPLICAS} pods");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader made no pod:\n{}",
            managers[leader].log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let killed = managers.remove(leader);
    drop(killed);
    let survivor = &managers[0];

    // The survivor takes over (after the lease's 15 s) and finishes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (total, owned, live) = pods(&kubectl, &dir, &uid);
        if owned == REPLICAS && live == REPLICAS {
            assert_eq!(total, REPLICAS, "pods beyond the ReplicaSet's");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader did not finish: {total} pods, {owned} owned, {live} live; holder {:?}:\n{}",
            holder(&kubectl, &dir),
            survivor.log()
        );
        thread::sleep(Duration::from_millis(300));
    }
    let survivor_pid = survivor.child.id();
    assert!(
        holder(&kubectl, &dir).ends_with(&format!("_{survivor_pid}")),
        "the survivor holds the lease"
    );
    // And nothing more comes: no pod made twice, no pod deleted to make up.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(pods(&kubectl, &dir, &uid), (REPLICAS, REPLICAS, REPLICAS));
    let ready = kubectl.ok(
        "kubectl get rs failover -o jsonpath={.status.replicas}",
        &dir,
    );
    assert_eq!(ready.trim(), REPLICAS.to_string(), "status.replicas");
}
