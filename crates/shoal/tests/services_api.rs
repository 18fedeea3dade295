//! Services on the API side, against a real `shoal up` with its controllers
//! (no node agent: pods get their addresses and readiness by status patches,
//! as a kubelet would write them): Endpoints and EndpointSlices following
//! pods as they become ready, unready and go; named target ports;
//! `publishNotReadyAddresses`; selectorless Services keeping their users'
//! Endpoints and getting mirrored slices; the API server's answers to
//! addresses taken or out of range; and what kubectl prints for them. Every
//! check goes through kubectl 1.32, as a user would.

mod common;
#[path = "common/kube.rs"]
mod kube;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use kube::{Kubectl, KubectlRelease, Shoal};
use serde_json::Value;

/// How long the controllers may take to reflect a change.
const WAIT: Duration = Duration::from_secs(30);

struct Cluster {
    shoal: Shoal,
    kubectl: Kubectl,
}

impl Cluster {
    fn start() -> Cluster {
        let shoal = Shoal::start_with(&["--disable-agent", "--disable-scheduler"]);
        let kubectl = Kubectl::new(KubectlRelease::V1_32, &shoal);
        Cluster { shoal, kubectl }
    }

    fn dir(&self) -> &Path {
        self.shoal.dir.path()
    }

    fn ok(&self, command_line: &str) -> String {
        self.kubectl.ok(command_line, self.dir())
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, command_line: &str) -> String {
        let output = self.kubectl.run(command_line, self.dir());
        assert!(
            !output.status.success(),
            "`{command_line}` succeeded but should have failed:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    fn apply(&self, name: &str, manifest: &str) {
        let path = self.dir().join(format!("{name}.yaml"));
        std::fs::write(&path, manifest).expect("write a manifest");
        self.ok(&format!("kubectl apply -f '{}'", path.display()));
    }

    fn create_fails(&self, name: &str, manifest: &str) -> String {
        let path = self.dir().join(format!("{name}.yaml"));
        std::fs::write(&path, manifest).expect("write a manifest");
        self.fails(&format!("kubectl create -f '{}'", path.display()))
    }

    fn json(&self, command_line: &str) -> Value {
        serde_json::from_str(&self.ok(command_line)).expect("kubectl's JSON")
    }

    /// Waits until `read` gives what `wanted` accepts; panics with the last
    /// reading otherwise.
    fn wait_for<T: std::fmt::Debug>(
        &self,
        what: &str,
        read: impl Fn(&Cluster) -> T,
        wanted: impl Fn(&T) -> bool,
    ) -> T {
        let start = Instant::now();
        loop {
            let value = read(self);
            if wanted(&value) {
                return value;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "{what}: not there after {WAIT:?}; last seen {value:?}\nshoal's log:\n{}",
                    self.shoal.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Gives a pod the address and readiness a kubelet would report.
    fn set_pod_status(&self, pod: &str, ip: &str, ready: bool) {
        let ready = if ready { "True" } else { "False" };
        let patch = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{ready}"}}]}}}}"#
        );
        self.ok(&format!(
            "kubectl patch pod {pod} --subresource=status --type=merge -p '{patch}'"
        ));
    }

    /// (ip, port name, port, ready) of every address in an Endpoints.
    fn endpoints_of(&self, name: &str) -> BTreeSet<(String, String, i64, bool)> {
        let output = self
            .kubectl
            .run(&format!("kubectl get endpoints {name} -o json"), self.dir());
        if !output.status.success() {
            return BTreeSet::new();
        }
        let endpoints: Value = serde_json::from_slice(&output.stdout).expect("an Endpoints");
        let mut seen = BTreeSet::new();
        for subset in endpoints["subsets"].as_array().into_iter().flatten() {
            for port in subset["ports"].as_array().into_iter().flatten() {
                for (list, ready) in [("addresses", true), ("notReadyAddresses", false)] {
                    for address in subset[list].as_array().into_iter().flatten() {
                        seen.insert((
                            address["ip"].as_str().unwrap_or("").to_string(),
                            port["name"].as_str().unwrap_or("").to_string(),
                            port["port"].as_i64().unwrap_or(0),
                            ready,
                        ));
                    }
                }
            }
        }
        seen
    }

    /// Asserts that nothing writes a Service's Endpoints or slices again
    /// for two seconds (a controller that found its own write different
    /// from what it wants would write in a loop).
    fn assert_settled(&self, service: &str) {
        let versions = || {
            let endpoints = self.json(&format!("kubectl get endpoints {service} -o json"));
            let mut versions = vec![endpoints["metadata"]["resourceVersion"].to_string()];
            for slice in self.slices_of(service) {
                versions.push(slice["metadata"]["resourceVersion"].to_string());
            }
            versions
        };
        let settled = versions();
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            versions(),
            settled,
            "{service}'s endpoints are written again"
        );
    }

    /// The EndpointSlices of a Service.
    fn slices_of(&self, service: &str) -> Vec<Value> {
        let list = self.json(&format!(
            "kubectl get endpointslices -l kubernetes.io/service-name={service} -o json"
        ));
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// (ip, port name, port, ready, terminating) of every endpoint in a
    /// Service's slices.
    fn slice_endpoints_of(&self, service: &str) -> BTreeSet<(String, String, i64, bool, bool)> {
        let mut seen = BTreeSet::new();
        for slice in self.slices_of(service) {
            for port in slice["ports"].as_array().into_iter().flatten() {
                for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                    for address in endpoint["addresses"].as_array().into_iter().flatten() {
                        seen.insert((
                            address.as_str().unwrap_or("").to_string(),
                            port["name"].as_str().unwrap_or("").to_string(),
                            port["port"].as_i64().unwrap_or(0),
                            endpoint["conditions"]["ready"] == true,
                            endpoint["conditions"]["terminating"] == true,
                        ));
                    }
                }
            }
        }
        seen
    }
}

/// A pod labelled `app=web` (and `labels`), with a container port named
/// `http` at `http_port` if given.
fn pod(name: &str, http_port: Option<u16>) -> String {
    let ports = http_port
        .map(|port| format!("\n    ports:\n    - name: http\n      containerPort: {port}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  containers:
  - name: main
    image: busybox:1
    command: [sleep, "3600"]{ports}
"#
    )
}

fn addresses(entries: &[(&str, &str, i64, bool)]) -> BTreeSet<(String, String, i64, bool)> {
    entries
        .iter()
        .map(|(ip, name, port, ready)| (ip.to_string(), name.to_string(), *port, *ready))
        .collect()
}

#[test]
fn endpoints_and_slices_follow_pods_with_named_ports_and_not_ready_addresses() {
    let cluster = Cluster::start();
    cluster.apply(
        "services",
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: metrics, port: 9100}
---
apiVersion: v1
kind: Service
metadata:
  name: web-all
spec:
  selector: {app: web}
  publishNotReadyAddresses: true
  ports:
  - {name: http, port: 80, targetPort: 8080}
"#,
    );
    cluster.apply("a", &pod("a", Some(8080)));
    cluster.apply("b", &pod("b", Some(8081)));
    // c has no port named http: it is left out of that port only.
    cluster.apply("c", &pod("c", None));
    cluster.set_pod_status("a", "10.42.0.2", true);
    cluster.set_pod_status("b", "10.42.0.3", true);
    cluster.set_pod_status("c", "10.42.0.4", false);

    let expected = addresses(&[
        ("10.42.0.2", "http", 8080, true),
        ("10.42.0.3", "http", 8081, true),
        ("10.42.0.2", "metrics", 9100, true),
        ("10.42.0.3", "metrics", 9100, true),
        ("10.42.0.4", "metrics", 9100, false),
    ]);
    cluster.wait_for(
        "web's endpoints with named ports resolved per pod",
        |cluster| cluster.endpoints_of("web"),
        |seen| *seen == expected,
    );
    cluster.wait_for(
        "web-all's endpoints, every pod listed as ready",
        |cluster| cluster.endpoints_of("web-all"),
        |seen| {
            *seen
                == addresses(&[
                    ("10.42.0.2", "http", 8080, true),
                    ("10.42.0.3", "http", 8080, true),
                    ("10.42.0.4", "http", 8080, true),
                ])
        },
    );
    let endpoints = cluster.json("kubectl get endpoints web -o json");
    assert!(
        endpoints["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string(),
        "{endpoints}"
    );
    let address = endpoints["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|subset| subset["addresses"].as_array().cloned().unwrap_or_default())
        .find(|address| address["ip"] == "10.42.0.2")
        .expect("a's address");
    assert_eq!(address["targetRef"]["kind"], "Pod");
    assert_eq!(address["targetRef"]["name"], "a");

    // The slices: the same endpoints, with conditions, by this controller.
    cluster.wait_for(
        "web's slices",
        |cluster| cluster.slice_endpoints_of("web"),
        |seen| {
            *seen
                == [
                    ("10.42.0.2", "http", 8080, true),
                    ("10.42.0.3", "http", 8081, true),
                    ("10.42.0.2", "metrics", 9100, true),
                    ("10.42.0.3", "metrics", 9100, true),
                    ("10.42.0.4", "metrics", 9100, false),
                ]
                .iter()
                .map(|(ip, name, port, ready)| {
                    (ip.to_string(), name.to_string(), *port, *ready, false)
                })
                .collect()
        },
    );
    // Settled: nothing is written again.
    cluster.assert_settled("web");
    for slice in cluster.slices_of("web") {
        assert_eq!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["name"], "web");
        assert!(
            slice["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("web-")
        );
        assert_eq!(slice["addressType"], "IPv4");
    }

    // a stops being ready: it moves to the not-ready addresses.
    cluster.set_pod_status("a", "10.42.0.2", false);
    cluster.wait_for(
        "a not ready",
        |cluster| cluster.endpoints_of("web"),
        |seen| {
            *seen
                == addresses(&[
                    ("10.42.0.2", "http", 8080, false),
                    ("10.42.0.3", "http", 8081, true),
                    ("10.42.0.2", "metrics", 9100, false),
                    ("10.42.0.3", "metrics", 9100, true),
                    ("10.42.0.4", "metrics", 9100, false),
                ])
        },
    );
    // b is being deleted (a finalizer holds it, as a kubelet's shutdown
    // would): it leaves the Endpoints and stays in the slices as
    // terminating.
    cluster.ok(
        "kubectl patch pod b --type=merge -p '{\"metadata\":{\"finalizers\":[\"example.com/hold\"]}}'",
    );
    cluster.ok("kubectl delete pod b --wait=false");
    cluster.wait_for(
        "b gone from the endpoints",
        |cluster| cluster.endpoints_of("web"),
        |seen| seen.iter().all(|(ip, ..)| ip != "10.42.0.3"),
    );
    cluster.wait_for(
        "b terminating in the slices",
        |cluster| cluster.slice_endpoints_of("web"),
        |seen| {
            seen.contains(&(
                "10.42.0.3".to_string(),
                "http".to_string(),
                8081,
                false,
                true,
            ))
        },
    );
    // Gone for good: out of the slices too.
    cluster.ok("kubectl patch pod b --type=merge -p '{\"metadata\":{\"finalizers\":null}}'");
    cluster.wait_for(
        "b gone from the slices",
        |cluster| cluster.slice_endpoints_of("web"),
        |seen| !seen.is_empty() && seen.iter().all(|(ip, ..)| ip != "10.42.0.3"),
    );
    // Deleting the Service deletes its Endpoints.
    cluster.ok("kubectl delete service web-all");
    cluster.wait_for(
        "web-all's endpoints deleted",
        |cluster| {
            cluster
                .kubectl
                .run("kubectl get endpoints web-all", cluster.dir())
                .status
                .success()
        },
        |exists| !exists,
    );
    // Its slices go with it (their owner reference to it).
    cluster.wait_for(
        "web-all's slices deleted",
        |cluster| cluster.slices_of("web-all").len(),
        |count| *count == 0,
    );
}

#[test]
fn selectorless_services_keep_user_endpoints_and_get_mirrored_slices() {
    let cluster = Cluster::start();
    cluster.apply(
        "db",
        r#"apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  ports:
  - {name: pg, port: 5432}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: db
  labels: {team: data}
subsets:
- addresses:
  - ip: 192.0.2.10
  - ip: 192.0.2.11
  notReadyAddresses:
  - ip: 192.0.2.12
  ports:
  - {name: pg, port: 5432}
"#,
    );
    let seen = cluster.wait_for(
        "db's mirrored slice",
        |cluster| cluster.slice_endpoints_of("db"),
        |seen| seen.len() == 3,
    );
    assert_eq!(
        seen,
        [
            ("192.0.2.10", true),
            ("192.0.2.11", true),
            ("192.0.2.12", false)
        ]
        .iter()
        .map(|(ip, ready)| (ip.to_string(), "pg".to_string(), 5432, *ready, false))
        .collect()
    );
    let slices = cluster.slices_of("db");
    assert_eq!(slices.len(), 1);
    let labels = &slices[0]["metadata"]["labels"];
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslicemirroring-controller.k8s.io"
    );
    assert_eq!(labels["team"], "data");
    assert_eq!(
        slices[0]["metadata"]["ownerReferences"][0]["kind"],
        "Endpoints"
    );

    // The user's Endpoints are left as they were written.
    cluster.assert_settled("db");
    assert_eq!(
        cluster.endpoints_of("db"),
        addresses(&[
            ("192.0.2.10", "pg", 5432, true),
            ("192.0.2.11", "pg", 5432, true),
            ("192.0.2.12", "pg", 5432, false),
        ])
    );
    // A change to them is mirrored.
    cluster.ok(
        "kubectl patch endpoints db --type=json -p '[{\"op\":\"remove\",\"path\":\"/subsets/0/addresses/1\"}]'",
    );
    cluster.wait_for(
        "the change mirrored",
        |cluster| cluster.slice_endpoints_of("db"),
        |seen| seen.len() == 2 && seen.iter().all(|(ip, ..)| ip != "192.0.2.11"),
    );

    // The API server's own Endpoints are not mirrored (skip-mirror): it
    // writes the `kubernetes` slice itself.
    let slices = cluster.slices_of("kubernetes");
    assert_eq!(slices.len(), 1, "{slices:?}");
    assert_eq!(slices[0]["metadata"]["name"], "kubernetes");
    assert_eq!(slices[0]["ports"][0]["name"], "https");
    assert!(
        slices[0]["endpoints"][0]["addresses"][0].is_string(),
        "{slices:?}"
    );
}

#[test]
fn taken_or_out_of_range_addresses_answer_as_upstream() {
    let cluster = Cluster::start();
    let service = |name: &str, spec: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n{spec}"
        )
    };
    cluster.apply("first", &service("first", "  ports:\n  - port: 80\n"));
    let first = cluster.json("kubectl get service first -o json");
    let ip = first["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert_eq!(first["spec"]["clusterIPs"], serde_json::json!([ip]));
    assert_eq!(first["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));
    assert_eq!(first["spec"]["ipFamilyPolicy"], "SingleStack");
    assert_eq!(first["spec"]["sessionAffinity"], "None");

    let taken = cluster.create_fails(
        "taken",
        &service(
            "taken",
            &format!("  clusterIP: {ip}\n  ports:\n  - port: 80\n"),
        ),
    );
    assert_eq!(
        taken.trim(),
        format!(
            "The Service \"taken\" is invalid: spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
        )
    );
    let outside = cluster.create_fails(
        "outside",
        &service(
            "outside",
            "  clusterIP: 192.168.7.7\n  ports:\n  - port: 80\n",
        ),
    );
    assert_eq!(
        outside.trim(),
        "The Service \"outside\" is invalid: spec.clusterIPs: Invalid value: []string{\"192.168.7.7\"}: failed to allocate IP 192.168.7.7: provided IP is not in the valid range. The range of valid IPs is 10.43.0.0/16"
    );

    cluster.apply(
        "nodeport",
        &service(
            "nodeport",
            "  type: NodePort\n  ports:\n  - {port: 80, nodePort: 30080}\n",
        ),
    );
    let nodeport = cluster.json("kubectl get service nodeport -o json");
    assert_eq!(nodeport["spec"]["externalTrafficPolicy"], "Cluster");
    let port_taken = cluster.create_fails(
        "port-taken",
        &service(
            "port-taken",
            "  type: NodePort\n  ports:\n  - {port: 80, nodePort: 30080}\n",
        ),
    );
    assert_eq!(
        port_taken.trim(),
        "The Service \"port-taken\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    let port_outside = cluster.create_fails(
        "port-outside",
        &service(
            "port-outside",
            "  type: NodePort\n  ports:\n  - {port: 80, nodePort: 8080}\n",
        ),
    );
    assert_eq!(
        port_outside.trim(),
        "The Service \"port-outside\" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"
    );
    let forbidden = cluster.create_fails(
        "forbidden",
        &service("forbidden", "  ports:\n  - {port: 80, nodePort: 30081}\n"),
    );
    assert_eq!(
        forbidden.trim(),
        "The Service \"forbidden\" is invalid: spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
    );
    let unnamed = cluster.create_fails(
        "unnamed",
        &service("unnamed", "  ports:\n  - {port: 80}\n  - {port: 81}\n"),
    );
    assert!(
        unnamed.contains("spec.ports[0].name: Required value")
            && unnamed.contains("spec.ports[1].name: Required value"),
        "{unnamed}"
    );

    // NodePort → ClusterIP gives the port back; ClusterIP → NodePort takes one.
    cluster.ok("kubectl patch service nodeport -p '{\"spec\":{\"type\":\"ClusterIP\"}}'");
    let demoted = cluster.json("kubectl get service nodeport -o json");
    assert!(
        demoted["spec"]["ports"][0]["nodePort"].is_null(),
        "{demoted}"
    );
    cluster.apply(
        "port-taken",
        &service(
            "port-taken",
            "  type: NodePort\n  ports:\n  - {port: 80, nodePort: 30080}\n",
        ),
    );
    cluster.ok("kubectl patch service first -p '{\"spec\":{\"type\":\"NodePort\"}}'");
    let promoted = cluster.json("kubectl get service first -o json");
    let node_port = promoted["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{promoted}");
    assert_ne!(node_port, 30080);
    assert_eq!(promoted["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(promoted["spec"]["clusterIP"], ip.as_str());

    // Headless, and ClientIP affinity's default timeout.
    cluster.apply(
        "headless",
        &service("headless", "  clusterIP: None\n  ports:\n  - port: 80\n"),
    );
    let headless = cluster.json("kubectl get service headless -o json");
    assert_eq!(headless["spec"]["clusterIPs"], serde_json::json!(["None"]));
    cluster.apply(
        "sticky",
        &service(
            "sticky",
            "  sessionAffinity: ClientIP\n  ports:\n  - port: 80\n",
        ),
    );
    let sticky = cluster.json("kubectl get service sticky -o json");
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
}

#[test]
fn kubectl_prints_services_endpoints_and_slices_as_a_cluster_does() {
    let cluster = Cluster::start();
    cluster.apply(
        "web",
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: 8080}
"#,
    );
    for index in 1..=5 {
        let name = format!("p{index}");
        cluster.apply(&name, &pod(&name, None));
        cluster.set_pod_status(&name, &format!("10.42.0.{}", index + 1), true);
    }
    cluster.wait_for(
        "five endpoints",
        |cluster| cluster.endpoints_of("web").len(),
        |count| *count == 5,
    );
    cluster.wait_for(
        "five slice endpoints",
        |cluster| cluster.slice_endpoints_of("web").len(),
        |count| *count == 5,
    );
    // Settled, with an unnamed port too: nothing is written again.
    cluster.assert_settled("web");
    let ip = cluster.json("kubectl get service web -o json")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let text = cluster.ok("kubectl get svc,endpoints,endpointslices");
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    let has_row = |row: &[&str]| {
        lines
            .iter()
            .any(|line| line.len() == row.len() + 1 && line[..row.len()] == *row)
    };
    for header in [
        &[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ][..],
        &["NAME", "ENDPOINTS", "AGE"],
        &["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
    ] {
        assert!(
            lines.iter().any(|line| line.as_slice() == header),
            "no header {header:?} in:\n{text}"
        );
    }
    assert!(
        has_row(&["service/web", "ClusterIP", &ip, "<none>", "80/TCP"]),
        "{text}"
    );
    // Endpoints: three `ip:port`, then how many more (kubectl's
    // `+ N more...` is one cell with spaces in it).
    assert!(
        text.lines().any(|line| line.starts_with("endpoints/web ")
            && line.contains(" 10.42.0.2:8080,10.42.0.3:8080,10.42.0.4:8080 + 2 more... ")),
        "{text}"
    );
    assert!(
        text.lines().any(
            |line| line.starts_with("endpointslice.discovery.k8s.io/web-")
                && line.contains(" IPv4 ")
                && line.contains(" 8080 ")
                && line.contains(" + 2 more... ")
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("endpointslice.discovery.k8s.io/kubernetes ")),
        "{text}"
    );
}
