//! Probes: HTTP GET (a 2xx or 3xx answer passes), TCP (a connection
//! passes), exec (exit 0 passes), each within its timeout, and the
//! counting of successes and failures against the probe's thresholds.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What one probe run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// A probe's counters, kept across runs.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub started: Instant,
    pub last_run: Option<Instant>,
    pub successes: i32,
    pub failures: i32,
    /// The probe's verdict after thresholds: `Some(true)` passing,
    /// `Some(false)` failed, `None` not decided yet.
    pub verdict: Option<bool>,
}

impl Default for ProbeState {
    fn default() -> ProbeState {
        ProbeState::new()
    }
}

impl ProbeState {
    pub fn new() -> ProbeState {
        ProbeState {
            started: Instant::now(),
            last_run: None,
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// Whether the probe is due now.
    pub fn due(&self, probe: &Probe) -> bool {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        self.started.elapsed() >= delay && self.last_run.is_none_or(|at| at.elapsed() >= period)
    }

    /// Counts an outcome; returns true when the verdict changed.
    pub fn record(&mut self, probe: &Probe, outcome: &Outcome) -> bool {
        self.last_run = Some(Instant::now());
        let before = self.verdict;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                    self.verdict = Some(true);
                }
            }
            Outcome::Failure(_) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                    self.verdict = Some(false);
                }
            }
        }
        before != self.verdict
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn port(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.as_deref() == Some(name.as_str()))
            .and_then(|port| u16::try_from(port.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

fn timeout_of(probe: &Probe) -> Duration {
    Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64)
}

/// Runs an HTTP or TCP probe against `ip`; exec probes are run by the
/// caller (they need the runtime) and return `None` here.
pub async fn run_network(probe: &Probe, container: &Container, ip: IpAddr) -> Option<Outcome> {
    let timeout = timeout_of(probe);
    if let Some(http) = &probe.http_get {
        let Some(port) = port(container, &http.port) else {
            return Some(Outcome::Failure(format!("invalid port {:?}", http.port)));
        };
        let host = http
            .host
            .as_ref()
            .and_then(|host| host.parse().ok())
            .unwrap_or(ip);
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: String = http
            .http_headers
            .iter()
            .flatten()
            .map(|header| format!("{}: {}\r\n", header.name, header.value))
            .collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n{headers}\r\n"
        );
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut head = [0u8; 64];
            let mut read = 0;
            while read < 12 {
                let count = stream.read(&mut head[read..]).await?;
                if count == 0 {
                    break;
                }
                read += count;
            }
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..read]).into_owned())
        };
        return Some(match tokio::time::timeout(timeout, attempt).await {
            Err(_) => Outcome::Failure(format!(
                "Get \"http://{host}:{port}{path}\": context deadline exceeded"
            )),
            Ok(Err(error)) => {
                Outcome::Failure(format!("Get \"http://{host}:{port}{path}\": {error}"))
            }
            Ok(Ok(head)) => {
                let code: u16 = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(0);
                if (200..400).contains(&code) {
                    Outcome::Success
                } else {
                    Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
                }
            }
        });
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port(container, &tcp.port) else {
            return Some(Outcome::Failure(format!("invalid port {:?}", tcp.port)));
        };
        let host = tcp
            .host
            .as_ref()
            .and_then(|host| host.parse().ok())
            .unwrap_or(ip);
        return Some(
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await
            {
                Ok(Ok(_)) => Outcome::Success,
                Ok(Err(error)) => Outcome::Failure(format!("dial tcp {host}:{port}: {error}")),
                Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
            },
        );
    }
    None
}

/// The exec probe's timeout.
pub fn exec_timeout(probe: &Probe) -> Duration {
    timeout_of(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide_the_verdict() {
        let probe = Probe {
            failure_threshold: Some(2),
            success_threshold: Some(1),
            ..Probe::default()
        };
        let mut state = ProbeState::new();
        assert!(!state.record(&probe, &Outcome::Failure("x".into())));
        assert_eq!(state.verdict, None);
        assert!(state.record(&probe, &Outcome::Failure("x".into())));
        assert_eq!(state.verdict, Some(false));
        assert!(state.record(&probe, &Outcome::Success));
        assert_eq!(state.verdict, Some(true));
    }

    #[tokio::test]
    async fn tcp_and_http_probes_reach_a_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 512];
                let _ = socket.read(&mut buffer).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let container = Container::default();
        let tcp = Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::Int(i32::from(port)),
                host: None,
            }),
            ..Probe::default()
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            run_network(&tcp, &container, ip).await,
            Some(Outcome::Success)
        );
        let http = Probe {
            http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
                port: IntOrString::Int(i32::from(port)),
                path: Some("/healthz".into()),
                ..Default::default()
            }),
            ..Probe::default()
        };
        assert_eq!(
            run_network(&http, &container, ip).await,
            Some(Outcome::Failure(
                "HTTP probe failed with statuscode: 503".into()
            ))
        );
    }
}
