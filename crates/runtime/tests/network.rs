//! `--net=default` end to end, as root: containers on shoal's bridge reach
//! each other by address, published ports answer on the host's loopback and
//! own address (and, through the host, to other containers), egress is
//! masqueraded behind the host, `--net=none` has only loopback, bad
//! `--publish` input is a one-line error, concurrent runs get distinct
//! addresses, and after `stop`/`rm` no veth, iptables rule, lease or bridge
//! is left.

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Shoal, require_container_support};
use nix::fcntl::{Flock, FlockArg};

const INSECURE: &str = "--insecure-options=image";
/// The lock shoal holds while it changes bridges, rules and leases.
const NETWORK_LOCK: &str = "/run/shoal/network.lock";
/// A busybox web server answering `hello-from-web` on port 8080.
const WEB_SERVER: &str = "echo hello-from-web > /tmp/index.html; exec httpd -f -p 8080 -h /tmp";

fn ps(shoal: &Shoal) -> Vec<serde_json::Value> {
    serde_json::from_str(&shoal.ok(&["ps", "--output", "json"])).unwrap()
}

fn row<'rows>(rows: &'rows [serde_json::Value], name: &str) -> &'rows serde_json::Value {
    rows.iter()
        .find(|row| row["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {rows:?}"))
}

fn address_of(shoal: &Shoal, name: &str) -> Ipv4Addr {
    let rows = ps(shoal);
    row(&rows, name)["address"]
        .as_str()
        .unwrap_or_else(|| panic!("container {name} has no address: {rows:?}"))
        .parse()
        .unwrap()
}

fn id_of(shoal: &Shoal, name: &str) -> String {
    let rows = ps(shoal);
    row(&rows, name)["id"].as_str().unwrap().to_string()
}

/// The data directory's network record: (bridge, subnet).
fn network_record(shoal: &Shoal) -> (String, Ipv4Addr) {
    let path = shoal.runtime_dir().join("network/network.json");
    let record: serde_json::Value = serde_json::from_slice(
        &fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display())),
    )
    .unwrap();
    (
        record["bridge"].as_str().unwrap().to_string(),
        record["subnet"].as_str().unwrap().parse().unwrap(),
    )
}

fn in_subnet(address: Ipv4Addr, subnet: Ipv4Addr) -> bool {
    address.octets()[..3] == subnet.octets()[..3]
}

/// A TCP port nothing on the host uses right now.
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The host's own IPv4 address: the first global one not on a shoal bridge.
fn host_address() -> Ipv4Addr {
    let output = Command::new("ip")
        .args(["-j", "-4", "addr", "show", "scope", "global"])
        .output()
        .expect("cannot run ip: run crates/runtime/install-deps.sh");
    let links: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .filter(|link| {
            let name = link["ifname"].as_str().unwrap_or("");
            !name.starts_with("shoal") && !name.starts_with("veth")
        })
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .find_map(|info| info["local"].as_str().and_then(|text| text.parse().ok()))
        .expect("the host has no global IPv4 address to publish ports on")
}

/// `GET /` over plain TCP; the whole response, or the error.
fn http_get(address: Ipv4Addr, port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&(address, port).into(), Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// Waits until `check` holds (a container's server needs a moment).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn iptables_rules() -> String {
    let mut rules = String::new();
    for table in ["nat", "filter"] {
        let output = Command::new("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
            .expect("cannot run iptables: run crates/runtime/install-deps.sh");
        assert!(output.status.success());
        rules.push_str(&String::from_utf8(output.stdout).unwrap());
    }
    rules
}

fn lease_files(shoal: &Shoal) -> Vec<String> {
    match fs::read_dir(shoal.runtime_dir().join("network/leases")) {
        Ok(entries) => entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Checks, under shoal's own network lock (so no other test's shoal is
/// half-way through a change), that the containers `ids` left nothing: no
/// lease, no veth, no rule of theirs, and that this data directory's network
/// (`bridge`) is gone with its rules. A bridge of the same name may exist by
/// then, made since by another data directory: it must not be ours.
fn assert_network_gone(shoal: &Shoal, bridge: &str, ids: &[String]) {
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(NETWORK_LOCK)
        .unwrap();
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).unwrap();
    assert_eq!(lease_files(shoal), Vec::<String>::new(), "leases left");
    assert!(
        !shoal.runtime_dir().join("network/network.json").exists(),
        "the network record was left"
    );
    let rules = iptables_rules();
    for id in ids {
        let veth = format!("veth{}", &id[..11]);
        assert!(
            !Path::new("/sys/class/net").join(&veth).exists(),
            "{veth} was left"
        );
        let tag = format!("shoal:{bridge}:{}", &id[..12]);
        assert!(!rules.contains(&tag), "rules of {id} were left:\n{rules}");
    }
    let bridge_dir = Path::new("/sys/class/net").join(bridge);
    if bridge_dir.exists() {
        let alias = fs::read_to_string(bridge_dir.join("ifalias")).unwrap_or_default();
        assert!(
            !alias.contains(&shoal.runtime_dir().display().to_string()),
            "bridge {bridge} was left"
        );
    } else {
        assert!(
            !rules.contains(&format!("\"shoal:{bridge}\"")),
            "rules of bridge {bridge} were left:\n{rules}"
        );
    }
}

#[test]
fn containers_reach_each_other_and_published_ports_answer_on_the_host() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let host_port = free_port();
    let publish = format!("{host_port}:8080");
    shoal.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, INSECURE, "busybox", "--", "sh", "-c",
        WEB_SERVER,
    ]);
    let (bridge, subnet) = network_record(&shoal);
    let web = address_of(&shoal, "web");
    assert!(in_subnet(web, subnet), "{web} is not in {subnet}/24");
    assert_eq!(
        row(&ps(&shoal), "web")["ports"],
        serde_json::json!([format!("{host_port}:8080/tcp")])
    );
    let gateway = Ipv4Addr::from(u32::from(subnet) + 1);
    assert!(
        Path::new("/sys/class/net")
            .join(&bridge)
            .join("bridge")
            .exists(),
        "no bridge {bridge}"
    );

    // From the host: loopback and the host's own address.
    eventually("the published port answers on 127.0.0.1", || {
        http_get(Ipv4Addr::LOCALHOST, host_port).is_ok_and(|body| body.contains("hello-from-web"))
    });
    let host = host_address();
    let response = http_get(host, host_port).unwrap();
    assert!(response.contains("hello-from-web"), "{response}");

    // From another container: by the server's address, and through the
    // host's address and port (hairpin).
    let script = format!(
        "ip -o -4 addr show eth0; ip route; timeout 5 wget -q -O - http://{web}:8080/; \
         timeout 5 wget -q -O - http://{host}:{host_port}/"
    );
    let output = shoal.ok(&[
        "run", "--rm", INSECURE, "busybox", "--", "sh", "-c", &script,
    ]);
    let client: Ipv4Addr = output
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|address| address.split('/').next())
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("no eth0 address in: {output}"));
    assert!(in_subnet(client, subnet) && client != web, "{output}");
    assert!(
        output.contains(&format!("default via {gateway} dev eth0")),
        "{output}"
    );
    assert_eq!(
        output.matches("hello-from-web").count(),
        2,
        "by address and through the host: {output}"
    );

    // Stopping the container unpublishes the port and frees the address.
    let id = id_of(&shoal, "web");
    // (httpd, as pid 1, ignores SIGTERM: it gets SIGKILL after a second.)
    shoal.ok(&["stop", "--time", "1", "web"]);
    assert_eq!(lease_files(&shoal), Vec::<String>::new());
    assert!(!iptables_rules().contains(&id[..12]));
    let error = http_get(Ipv4Addr::LOCALHOST, host_port).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    shoal.ok(&["rm", "web"]);
    assert_network_gone(&shoal, &bridge, &[id]);
}

/// A network namespace standing for the world outside the host, joined to
/// the host by a veth on 198.18.N.0/30 (the benchmarking range) and with
/// no route back to containers: only masqueraded traffic can be answered.
struct Outside {
    name: String,
    host_side: String,
    host_address: Ipv4Addr,
    address: Ipv4Addr,
}

impl Outside {
    fn new() -> Outside {
        let tag = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let third = rand::random::<u8>();
        let outside = Outside {
            name: format!("shoal-test-{tag}"),
            host_side: format!("vout{tag}"),
            host_address: Ipv4Addr::new(198, 18, third, 1),
            address: Ipv4Addr::new(198, 18, third, 2),
        };
        let run = |args: &[&str]| {
            let output = Command::new("ip").args(args).output().unwrap();
            assert!(
                output.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        run(&["netns", "add", &outside.name]);
        run(&[
            "link",
            "add",
            &outside.host_side,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &outside.name,
        ]);
        run(&[
            "addr",
            "add",
            &format!("{}/30", outside.host_address),
            "dev",
            &outside.host_side,
        ]);
        run(&["link", "set", &outside.host_side, "up"]);
        for command in [
            format!("addr add {}/30 dev eth0", outside.address),
            "link set eth0 up".to_string(),
            "link set lo up".to_string(),
        ] {
            let mut args = vec!["-n", &outside.name];
            args.extend(command.split(' '));
            run(&args);
        }
        outside
    }

    /// Listens on port 9000 in the outside namespace; the thread answers
    /// one connection with `pong` and returns the peer's address.
    fn serve_once(&self) -> std::thread::JoinHandle<Ipv4Addr> {
        let namespace = File::open(format!("/run/netns/{}", self.name)).unwrap();
        let address = self.address;
        let (ready_sender, ready) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let listener = TcpListener::bind((address, 9000)).unwrap();
            ready_sender.send(()).unwrap();
            let (mut stream, peer) = listener.accept().unwrap();
            stream.write_all(b"pong\n").unwrap();
            match peer.ip() {
                std::net::IpAddr::V4(peer) => peer,
                other => panic!("peer {other}"),
            }
        });
        ready.recv().unwrap();
        server
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_side])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn egress_is_forwarded_and_masqueraded_behind_the_host() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let outside = Outside::new();
    let server = outside.serve_once();
    let script = format!("echo ping | timeout 5 nc {} 9000", outside.address);
    let output = shoal.ok(&[
        "run", "--rm", INSECURE, "busybox", "--", "sh", "-c", &script,
    ]);
    assert_eq!(output, "pong\n");
    // The outside saw the host's address on its link, not the container's.
    assert_eq!(server.join().unwrap(), outside.host_address);
    assert_eq!(lease_files(&shoal), Vec::<String>::new());
}

#[test]
fn net_none_has_only_loopback_and_net_default_adds_eth0() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let script = "ip -o link; ip -o -4 addr | wc -l";
    let links = |net: &str| {
        let output = shoal.ok(&[
            "run", "--rm", INSECURE, net, "busybox", "--", "sh", "-c", script,
        ]);
        output
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Lines are `1: lo: <…> …` and `2: eth0@if7: <…> …`: keep the names.
    let names = |words: Vec<String>| {
        let count = words.last().cloned().unwrap();
        let names: Vec<String> = words
            .iter()
            .filter_map(|word| word.strip_suffix(':'))
            .filter(|word| word.parse::<u32>().is_err())
            .map(|word| word.split('@').next().unwrap().to_string())
            .collect();
        (names, count)
    };
    let (none_links, none_addresses) = names(links("--net=none"));
    assert_eq!(none_links, ["lo"]);
    assert_eq!(none_addresses, "1", "only 127.0.0.1");
    let (default_links, default_addresses) = names(links("--net=default"));
    assert_eq!(default_links, ["lo", "eth0"]);
    assert_eq!(default_addresses, "2", "127.0.0.1 and eth0's");
    assert_eq!(lease_files(&shoal), Vec::<String>::new());
}

#[test]
fn bad_publish_input_and_taken_ports_are_one_line_errors_that_leave_nothing() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    for (spec, message) in [
        ("99999:80", "port 99999 is not in 1-65535"),
        ("abc", "expected HOSTPORT:CONTAINERPORT[/tcp|/udp]"),
        ("8080", "expected HOSTPORT:CONTAINERPORT[/tcp|/udp]"),
        ("80:80/sctp", "unknown protocol \"sctp\""),
    ] {
        let error = shoal.fails(&["run", "-p", spec, INSECURE, "busybox", "--", "true"], 2);
        assert!(error.contains(message), "{spec}: {error}");
    }
    let error = shoal.fails(
        &[
            "run",
            "--net=none",
            "-p",
            "8080:80",
            INSECURE,
            "busybox",
            "--",
            "true",
        ],
        1,
    );
    assert!(error.contains("--publish needs --net=default"), "{error}");

    let host_port = free_port();
    let publish = format!("{host_port}:8080");
    shoal.ok(&[
        "run", "-d", "--name", "first", "-p", &publish, INSECURE, "busybox", "--", "sh", "-c",
        WEB_SERVER,
    ]);
    let (bridge, _) = network_record(&shoal);
    let first_id = id_of(&shoal, "first");
    let rules_before = iptables_rules();
    let error = shoal.fails(
        &[
            "run", "-d", "--name", "second", "-p", &publish, INSECURE, "busybox", "--", "true",
        ],
        1,
    );
    assert_eq!(
        error.trim(),
        format!("error: host port {host_port}/tcp is already published by container first")
    );
    // The same port over udp is another port.
    let udp = format!("{host_port}:53/udp");
    shoal.ok(&["run", "--rm", "-p", &udp, INSECURE, "busybox", "--", "true"]);
    let twice = format!("{}:1", host_port + 1);
    let error = shoal.fails(
        &[
            "run", "-p", &twice, "-p", &twice, INSECURE, "busybox", "--", "true",
        ],
        1,
    );
    assert!(error.contains("is published twice"), "{error}");
    // A port a host process listens on.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let busy = format!("{}:80", listener.local_addr().unwrap().port());
    let error = shoal.fails(&["run", "-p", &busy, INSECURE, "busybox", "--", "true"], 1);
    assert!(
        error.contains("is in use by a process on this machine"),
        "{error}"
    );
    drop(listener);
    // A container that fails to start gives its address back.
    let error = shoal.fails(
        &[
            "run",
            "-p",
            &format!("{}:80", free_port()),
            INSECURE,
            "busybox",
            "--",
            "/no/such",
        ],
        127,
    );
    assert!(error.contains("not found in image"), "{error}");

    // None of that left a container, a lease or a rule.
    let rows = ps(&shoal);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(lease_files(&shoal).len(), 1);
    let shoal_rules = |rules: &str| {
        rules
            .lines()
            .filter(|line| line.contains(&format!("shoal:{bridge}")))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(shoal_rules(&iptables_rules()), shoal_rules(&rules_before));
    shoal.ok(&["rm", "--force", "first"]);
    assert_network_gone(&shoal, &bridge, &[first_id]);
}

#[test]
fn concurrent_runs_get_distinct_addresses_and_leave_nothing() {
    require_container_support();
    let shoal = Shoal::new();
    shoal.import_busybox("busybox");
    let n_containers = 8;
    std::thread::scope(|scope| {
        for index in 0..n_containers {
            let shoal = &shoal;
            scope.spawn(move || {
                let name = format!("c{index}");
                shoal.ok(&[
                    "run", "-d", "--name", &name, INSECURE, "busybox", "--", "sleep", "1000",
                ]);
            });
        }
    });
    let (bridge, subnet) = network_record(&shoal);
    let rows = ps(&shoal);
    let mut addresses: Vec<Ipv4Addr> = rows
        .iter()
        .map(|row| row["address"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(addresses.iter().all(|address| in_subnet(*address, subnet)));
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), n_containers, "{rows:?}");
    assert_eq!(lease_files(&shoal).len(), n_containers);
    let ids: Vec<String> = rows
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_string())
        .collect();
    let mut args = vec!["rm", "--force"];
    args.extend(ids.iter().map(String::as_str));
    shoal.ok(&args);
    assert_network_gone(&shoal, &bridge, &ids);
}
