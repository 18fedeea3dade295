//! The pod network through `runtime::pod`: the node's bridge, rules and
//! peer routes made once and replaced as a set, and two machines (threads
//! in network namespaces of their own, wired by a veth pair) whose pods
//! reach each other by the peer routes, unmasqueraded, and the outside
//! masqueraded.

mod common;

use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::pods::{ChildGuard, Machine, Node, iptables_rules, run_tool};
use common::{Shoal, require_container_support};
use runtime::pod::{
    ContainerSpec, Ipv4Cidr, PodNetwork, PodRuntime, PodRuntimeOptions, PullPolicy, SandboxSpec,
};

#[test]
fn the_network_is_idempotent_and_peer_routes_are_replaced_as_a_set() {
    let node = Node::new(17);
    node.runtime.ensure_network().unwrap();
    let rules = iptables_rules();
    let tag = "\"shoal:shpt17\"";
    let n_rules = rules.lines().filter(|line| line.contains(tag)).count();
    assert_eq!(n_rules, 5, "{rules}");
    let address = fs::read_to_string("/proc/net/fib_trie").unwrap();
    assert!(address.contains("10.231.17.1"));
    // A pod gives the bridge a carrier, so routes via its range are live.
    node.sandbox("0a17aaaa-1111-4111-8111-000000000007", "router", Vec::new());
    let via = Ipv4Addr::new(10, 231, 17, 250);
    let routes = |filter: &str| {
        let output = std::process::Command::new("ip")
            .args(["-4", "route", "show", "proto", "90"])
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter(|line| line.contains(filter))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    node.runtime
        .set_peer_routes(&[
            ("10.231.117.0/24".parse().unwrap(), via),
            ("10.231.118.0/24".parse().unwrap(), via),
        ])
        .unwrap();
    assert_eq!(routes("10.231.11").len(), 2, "{:?}", routes(""));
    node.runtime
        .set_peer_routes(&[("10.231.118.0/24".parse().unwrap(), via)])
        .unwrap();
    let left = routes("10.231.11");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with("10.231.118.0/24 via 10.231.17.250 dev shpt17"),
        "{left:?}"
    );
    node.runtime.set_peer_routes(&[]).unwrap();
    assert!(routes("10.231.11").is_empty());
    // Another interface of that name is refused, not taken over.
    let other = PodRuntime::open(
        node.data_dir(),
        PodNetwork {
            bridge: "lo".into(),
            pod_cidr: "10.231.99.0/24".parse().unwrap(),
            cluster_cidr: "10.231.0.0/16".parse().unwrap(),
            mtu: None,
        },
    )
    .unwrap();
    let error = other.ensure_network().unwrap_err().to_string();
    assert!(
        error.contains("interface lo exists and is not shoal's pod bridge"),
        "{error}"
    );
}

/// busybox httpd with a CGI script that answers the client's address.
/// (printf and chmod are not among the image's applets: through busybox.)
const WHO_SERVER: &str = "mkdir -p /www/cgi-bin && busybox printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' > /www/cgi-bin/who && busybox chmod +x /www/cgi-bin/who && exec httpd -f -p 8080 -h /www";

#[test]
fn pods_on_two_machines_reach_each_other_by_peer_routes_unmasqueraded() {
    require_container_support();
    let machines = [Machine::new(), Machine::new()];
    // A wire between the two machines: 192.168.77.1 and .2.
    let other = machines[1].namespace_path();
    machines[0].run(move || {
        run_tool(
            "ip",
            &[
                "link", "add", "wire", "type", "veth", "peer", "name", "wire", "netns", &other,
            ],
        );
        run_tool("ip", &["addr", "add", "192.168.77.1/24", "dev", "wire"]);
        run_tool("ip", &["link", "set", "wire", "up"]);
    });
    machines[1].run(|| {
        run_tool("ip", &["addr", "add", "192.168.77.2/24", "dev", "wire"]);
        run_tool("ip", &["link", "set", "wire", "up"]);
    });

    let shoals = [Shoal::new(), Shoal::new()];
    let mut runtimes = Vec::new();
    let mut pod_ips = Vec::new();
    let mut servers = Vec::new();
    for (index, (machine, shoal)) in machines.iter().zip(&shoals).enumerate() {
        shoal.import_busybox("busybox");
        let runtime = PodRuntime::open_with(
            shoal.data_dir.path(),
            PodNetwork {
                bridge: "shoal0".into(),
                pod_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 231, 40 + index as u8, 0), 24).unwrap(),
                cluster_cidr: "10.231.0.0/16".parse().unwrap(),
                mtu: Some(1500),
            },
            PodRuntimeOptions {
                executable: Some(env!("CARGO_BIN_EXE_shoal-runtime").into()),
                insecure_registries: Vec::new(),
                log_max_bytes: None,
                pod_pids_limit: None,
            },
        )
        .unwrap();
        let peer_range: Ipv4Cidr = format!("10.231.{}.0/24", 41 - index).parse().unwrap();
        let peer_address = Ipv4Addr::new(192, 168, 77, 2 - index as u8);
        let on_machine = runtime.clone();
        let (ip, server) = machine.run(move || {
            let runtime = on_machine;
            runtime.ensure_network().unwrap();
            runtime
                .set_peer_routes(&[(peer_range, peer_address)])
                .unwrap();
            let uid = format!("0a4{index}aaaa-1111-4111-8111-000000000013");
            let ip = runtime
                .create_sandbox(&SandboxSpec {
                    uid: uid.clone(),
                    name: format!("pod{index}"),
                    namespace: "default".into(),
                    hostname: None,
                    host_network: false,
                    port_mappings: Vec::new(),
                })
                .unwrap()
                .ip
                .unwrap();
            let image = runtime
                .ensure_image("busybox", PullPolicy::Never, None, true)
                .unwrap();
            let server = runtime
                .start_container(
                    &uid,
                    &ContainerSpec {
                        name: "who".into(),
                        image: image.id,
                        args: vec!["sh".into(), "-c".into(), WHO_SERVER.into()],
                        ..ContainerSpec::default()
                    },
                )
                .unwrap();
            (ip, server)
        });
        runtimes.push(runtime);
        pod_ips.push(ip);
        servers.push(server);
    }
    // Outside the cluster range: a server on machine 1's own address.
    let outside = machines[1].run(|| {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("cgi-bin")).unwrap();
        let script = dir.path().join("cgi-bin/who");
        fs::write(
            &script,
            "#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let child = ChildGuard(
            std::process::Command::new(common::BUSYBOX)
                .args(["httpd", "-f", "-p", "192.168.77.2:8081", "-h"])
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        (child, dir)
    });

    // Pod 0 asks each server who it is (busybox httpd listens on IPv6 and
    // shows IPv4 clients as `[::ffff:A.B.C.D]`).
    let ask = |url: String| -> String {
        let runtime = runtimes[0].clone();
        let id = servers[0].clone();
        machines[0].run(move || {
            let mut answer = String::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let argv: Vec<String> = ["timeout", "5", "wget", "-q", "-O", "-", url.as_str()]
                    .iter()
                    .map(|arg| arg.to_string())
                    .collect();
                let mut process = runtime.exec(&id, &argv, false).unwrap();
                drop(process.stdin.take());
                answer.clear();
                process
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut answer)
                    .unwrap();
                if process.wait().unwrap() == 0 {
                    return answer
                        .trim()
                        .trim_start_matches("[::ffff:")
                        .trim_end_matches(']')
                        .to_string();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("{url} never answered");
        })
    };
    // Pod to pod across machines: by the peer route, with its own address.
    let seen = ask(format!("http://{}:8080/cgi-bin/who", pod_ips[1]));
    assert_eq!(seen, pod_ips[0].to_string());
    // Pod to outside the cluster range: masqueraded behind machine 0.
    let seen = ask("http://192.168.77.2:8081/cgi-bin/who".to_string());
    assert_eq!(seen, "192.168.77.1");

    drop(outside);
    for (machine, runtime) in machines.iter().zip(&runtimes) {
        let runtime = runtime.clone();
        machine.run(move || {
            for sandbox in runtime.list().unwrap() {
                runtime.remove_sandbox(&sandbox.uid).unwrap();
            }
            runtime.teardown_network().unwrap();
        });
    }
}
