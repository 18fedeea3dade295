//! The cluster DNS of `shoal up`, asked with the real `dig`: the Kubernetes
//! DNS specification's records for services made through the API, names
//! forwarded to an upstream (a fake one on loopback, never the internet),
//! and the SkyDNS workflow with the real `etcdctl`.

mod common;
#[path = "common/kube.rs"]
mod kube_shoal;

use std::net::UdpSocket;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{etcdctl_command, free_ports, run_with_watchdog};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube_shoal::Shoal;

/// The fake upstream's answer to every A question.
const UPSTREAM_ADDRESS: [u8; 4] = [192, 0, 2, 77];
/// How long a record may take to appear after its object is written.
const PROPAGATION: Duration = Duration::from_secs(10);

/// A UDP resolver on loopback answering every query with one A record,
/// `UPSTREAM_ADDRESS`; it stops when dropped.
struct FakeUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeUpstream {
    fn start() -> FakeUpstream {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the fake upstream");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        let port = socket.local_addr().expect("its address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                if length < 12 {
                    continue;
                }
                // The question as asked, then one answer pointing back at
                // its name (offset 12): A, IN, TTL 60, four bytes.
                let mut reply = buffer[..length].to_vec();
                reply[2] |= 0x80;
                reply[3] = 0x80;
                reply[6..8].copy_from_slice(&1u16.to_be_bytes());
                reply[8..12].fill(0);
                reply.truncate(question_end(&reply).unwrap_or(length));
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                reply.extend_from_slice(&UPSTREAM_ADDRESS);
                let _ = socket.send_to(&reply, peer);
            }
        });
        FakeUpstream {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

/// Where the first question of a query ends.
fn question_end(packet: &[u8]) -> Option<usize> {
    let mut offset = 12;
    loop {
        let length = usize::from(*packet.get(offset)?);
        offset += 1;
        if length == 0 {
            break;
        }
        offset += length;
    }
    Some(offset + 4)
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `dig @127.0.0.1 -p PORT ARGS…`, its whole output.
fn dig(port: u16, args: &[&str]) -> String {
    let mut command = Command::new("dig");
    command
        .arg("@127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .args(["+time=2", "+tries=1"])
        .args(args);
    let output = run_with_watchdog(command, None, Duration::from_secs(15));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The answer section of `dig +noall +answer`, sorted, whitespace collapsed.
fn answers(port: u16, args: &[&str]) -> Vec<String> {
    let mut all = vec!["+noall", "+answer"];
    all.extend_from_slice(args);
    let mut lines: Vec<String> = dig(port, &all)
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty() && !line.starts_with(';'))
        .collect();
    lines.sort();
    lines
}

/// Asks until the answer is `expected`, for up to `PROPAGATION`.
fn wait_for_answers(port: u16, args: &[&str], expected: &[&str]) {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let got = answers(port, args);
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "dig {args:?}: expected {expected:?}, got {got:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The status and the authority section's record types of one reply.
fn status_and_authority(port: u16, args: &[&str]) -> (String, Vec<String>) {
    let output = dig(port, args);
    let status = output
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("none")
        .to_string();
    let authority = output
        .split(";; AUTHORITY SECTION:")
        .nth(1)
        .map(|section| {
            section
                .lines()
                .skip(1)
                .take_while(|line| !line.trim().is_empty())
                .filter_map(|line| line.split_whitespace().nth(3).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (status, authority)
}

async fn client(shoal: &Shoal) -> kube::Client {
    let file = kube::config::Kubeconfig::read_from(&shoal.kubeconfig).expect("read kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .expect("use kubeconfig");
    kube::Client::try_from(config).expect("a client")
}

fn object<K: k8s_openapi::serde::de::DeserializeOwned>(json: serde_json::Value) -> K {
    serde_json::from_value(json).expect("a valid object")
}

#[test]
fn dig_answers_the_specification_records_forwards_and_skydns() {
    let upstream = FakeUpstream::start();
    let dns_port = free_ports(1)[0];
    let listen = format!("--cluster-dns-listen=127.0.0.1:{dns_port}");
    let upstream_flag = format!("--dns-upstream=127.0.0.1:{}", upstream.port);
    let shoal = Shoal::start_with(&[
        "--disable-agent",
        "--disable-scheduler",
        "--disable-controllers",
        &listen,
        &upstream_flag,
    ]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let web_ip = runtime.block_on(async {
        let client = client(&shoal).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &object(serde_json::json!({"metadata": {"name": "prod"}})),
            )
            .await
            .expect("create namespace prod");
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let web = services
            .create(
                &PostParams::default(),
                &object(serde_json::json!({
                    "metadata": {"name": "web"},
                    "spec": {"selector": {"app": "web"},
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
                })),
            )
            .await
            .expect("create service web");
        let prod_services: Api<Service> = Api::namespaced(client.clone(), "prod");
        prod_services
            .create(
                &PostParams::default(),
                &object(serde_json::json!({
                    "metadata": {"name": "db"},
                    "spec": {"clusterIP": "None",
                             "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}
                })),
            )
            .await
            .expect("create headless service db");
        let slices: Api<EndpointSlice> = Api::namespaced(client, "prod");
        slices
            .create(
                &PostParams::default(),
                &object(serde_json::json!({
                    "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
                    "addressType": "IPv4",
                    "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                    "endpoints": [
                        {"addresses": ["10.42.1.5"], "hostname": "db-0",
                         "conditions": {"ready": true}},
                        {"addresses": ["10.42.2.6"], "conditions": {"ready": true}},
                        {"addresses": ["10.42.3.7"], "conditions": {"ready": false}}
                    ]
                })),
            )
            .await
            .expect("create db's EndpointSlice");
        web.spec
            .and_then(|spec| spec.cluster_ip)
            .expect("web has a ClusterIP")
    });
    let web_name = "web.default.svc.cluster.local.";

    // A and SRV of a ClusterIP service, over UDP and TCP.
    wait_for_answers(
        dns_port,
        &[web_name, "A"],
        &[&format!("{web_name} 5 IN A {web_ip}")],
    );
    wait_for_answers(
        dns_port,
        &["+tcp", web_name, "A"],
        &[&format!("{web_name} 5 IN A {web_ip}")],
    );
    wait_for_answers(
        dns_port,
        &["_http._tcp.web.default.svc.cluster.local.", "SRV"],
        &[&format!(
            "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 {web_name}"
        )],
    );
    // PTR of the ClusterIP.
    let reverse: String = {
        let mut octets: Vec<&str> = web_ip.split('.').collect();
        octets.reverse();
        format!("{}.in-addr.arpa.", octets.join("."))
    };
    wait_for_answers(
        dns_port,
        &["-x", &web_ip],
        &[&format!("{reverse} 5 IN PTR {web_name}")],
    );
    // Headless: every ready endpoint, the named one, SRV per endpoint.
    wait_for_answers(
        dns_port,
        &["db.prod.svc.cluster.local.", "A"],
        &[
            "db.prod.svc.cluster.local. 5 IN A 10.42.1.5",
            "db.prod.svc.cluster.local. 5 IN A 10.42.2.6",
        ],
    );
    wait_for_answers(
        dns_port,
        &["db-0.db.prod.svc.cluster.local.", "A"],
        &["db-0.db.prod.svc.cluster.local. 5 IN A 10.42.1.5"],
    );
    wait_for_answers(
        dns_port,
        &["_pg._tcp.db.prod.svc.cluster.local.", "SRV"],
        &[
            "_pg._tcp.db.prod.svc.cluster.local. 5 IN SRV 0 50 5432 10-42-2-6.db.prod.svc.cluster.local.",
            "_pg._tcp.db.prod.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.prod.svc.cluster.local.",
        ],
    );
    wait_for_answers(
        dns_port,
        &["-x", "10.42.1.5"],
        &["5.1.42.10.in-addr.arpa. 5 IN PTR db-0.db.prod.svc.cluster.local."],
    );
    // NXDOMAIN and NODATA, each with the SOA.
    assert_eq!(
        status_and_authority(dns_port, &["nothere.default.svc.cluster.local.", "A"]),
        ("NXDOMAIN".to_string(), vec!["SOA".to_string()])
    );
    assert_eq!(
        status_and_authority(dns_port, &[web_name, "AAAA"]),
        ("NOERROR".to_string(), vec!["SOA".to_string()])
    );
    assert!(answers(dns_port, &[web_name, "AAAA"]).is_empty());
    assert_eq!(
        status_and_authority(dns_port, &["prod.svc.cluster.local.", "A"]),
        ("NOERROR".to_string(), vec!["SOA".to_string()])
    );
    // The kube-dns Service, and its endpoints listing this server.
    let kube_dns = answers(dns_port, &["kube-dns.kube-system.svc.cluster.local.", "A"]);
    assert_eq!(kube_dns.len(), 1, "{kube_dns:?}");
    assert!(kube_dns[0].ends_with(".0.10"), "{kube_dns:?}");
    runtime.block_on(async {
        let client = client(&shoal).await;
        let slices: Api<EndpointSlice> = Api::namespaced(client, "kube-system");
        let slice = slices
            .get("kube-dns")
            .await
            .expect("kube-dns's EndpointSlice");
        assert_eq!(slice.endpoints[0].addresses, ["127.0.0.1"]);
        let ports: Vec<(Option<String>, Option<i32>)> = slice
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|port| (port.name, port.port))
            .collect();
        assert_eq!(
            ports,
            [
                (Some("dns".to_string()), Some(i32::from(dns_port))),
                (Some("dns-tcp".to_string()), Some(i32::from(dns_port)))
            ]
        );
    });
    // Other names go to the upstream.
    assert_eq!(
        answers(dns_port, &["www.example.org.", "A"]),
        ["www.example.org. 60 IN A 192.0.2.77"]
    );

    // SkyDNS: the 2015 workflow, and a malformed entry beside it.
    let endpoints = shoal.client_url();
    let put = |key: &str, value: &str| {
        let output = etcdctl_command(&endpoints, "5s", &["put", key, value], None);
        assert!(output.status.success(), "etcdctl put {key}: {output:?}");
    };
    put(
        "/skydns/local/skydns/east/production/rails",
        r#"{"host":"service5.example.com","port":8080}"#,
    );
    put(
        "/skydns/local/skydns/east/production/web",
        r#"{"host":"10.0.0.9","port":80,"ttl":30}"#,
    );
    put("/skydns/local/skydns/east/production/broken", r#"{"host":"#);
    wait_for_answers(
        dns_port,
        &["SRV", "production.east.skydns.local."],
        &[
            "production.east.skydns.local. 30 IN SRV 10 50 80 web.production.east.skydns.local.",
            "production.east.skydns.local. 3600 IN SRV 10 50 8080 service5.example.com.",
        ],
    );
    wait_for_answers(
        dns_port,
        &["web.production.east.skydns.local.", "A"],
        &["web.production.east.skydns.local. 30 IN A 10.0.0.9"],
    );
    assert_eq!(
        status_and_authority(dns_port, &["broken.production.east.skydns.local.", "SRV"]).0,
        "NXDOMAIN"
    );
    assert!(
        shoal.log().contains("skipping a SkyDNS record"),
        "the malformed entry is logged:\n{}",
        shoal.log()
    );
    // A deleted entry goes.
    let output = etcdctl_command(
        &endpoints,
        "5s",
        &["del", "/skydns/local/skydns/east/production/web"],
        None,
    );
    assert!(output.status.success(), "{output:?}");
    wait_for_answers(
        dns_port,
        &["SRV", "production.east.skydns.local."],
        &["production.east.skydns.local. 3600 IN SRV 10 100 8080 service5.example.com."],
    );
}
