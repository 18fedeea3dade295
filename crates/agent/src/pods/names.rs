//! How a pod finds names: its `/etc/resolv.conf`, per `dnsPolicy` and
//! `dnsConfig`, and its `/etc/hosts`, with its own name and `hostAliases`,
//! as kubelet writes them. Pure functions of the pod and the machine's
//! settings; the worker writes the files into the pod's directory and
//! bind-mounts them into every container.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// The most nameservers and search domains a resolver reads (glibc's
/// `MAXNS`, and kubelet's limit of six search domains since 1.28 raised to
/// 32; we keep glibc-era's six for busybox and musl resolvers).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 6;

/// What the machine knows about names: the cluster DNS (`--cluster-dns`,
/// none when the cluster has no DNS), its domain (`--cluster-domain`), and
/// the host's own resolver configuration (its `/etc/resolv.conf` text).
pub struct NameSettings<'a> {
    pub cluster_dns: &'a [IpAddr],
    pub cluster_domain: &'a str,
    pub host_resolv_conf: &'a str,
}

/// A resolver configuration: nameservers, search domains and options.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Resolver {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

impl Resolver {
    /// Reads the lines of a resolv.conf that matter: `nameserver`,
    /// `search` (the last one wins, as in glibc; `domain` is an old
    /// spelling of a one-element search) and `options`.
    fn parse(text: &str) -> Resolver {
        let mut resolver = Resolver::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(address) = words.next() {
                        resolver.nameservers.push(address.to_string());
                    }
                }
                Some("search") | Some("domain") => {
                    resolver.searches = words.map(str::to_string).collect();
                }
                Some("options") => {
                    for option in words {
                        resolver.set_option(option);
                    }
                }
                _ => {}
            }
        }
        resolver
    }

    /// Sets `name[:value]`, replacing an option of the same name.
    fn set_option(&mut self, option: &str) {
        let (name, value) = match option.split_once(':') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (option.to_string(), None),
        };
        match self.options.iter_mut().find(|(known, _)| *known == name) {
            Some(slot) => slot.1 = value,
            None => self.options.push((name, value)),
        }
    }

    fn render(&self) -> String {
        let mut text = String::new();
        let searches: Vec<&String> = {
            let mut seen = std::collections::HashSet::new();
            self.searches
                .iter()
                .filter(|search| seen.insert(search.as_str()))
                .take(MAX_SEARCHES)
                .collect()
        };
        if !searches.is_empty() {
            text.push_str("search");
            for search in searches {
                text.push(' ');
                text.push_str(search);
            }
            text.push('\n');
        }
        let mut seen = std::collections::HashSet::new();
        for nameserver in self
            .nameservers
            .iter()
            .filter(|nameserver| seen.insert(nameserver.as_str()))
            .take(MAX_NAMESERVERS)
        {
            text.push_str("nameserver ");
            text.push_str(nameserver);
            text.push('\n');
        }
        if !self.options.is_empty() {
            text.push_str("options");
            for (name, value) in &self.options {
                text.push(' ');
                text.push_str(name);
                if let Some(value) = value {
                    text.push(':');
                    text.push_str(value);
                }
            }
            text.push('\n');
        }
        text
    }
}

/// The host's resolver as a pod may use it: loopback nameservers (a
/// local stub such as systemd-resolved's 127.0.0.53) are unreachable from
/// a pod's own network namespace, so they are left out.
fn host_resolver(settings: &NameSettings<'_>, host_network: bool) -> Resolver {
    let mut host = Resolver::parse(settings.host_resolv_conf);
    if !host_network {
        host.nameservers.retain(|nameserver| {
            nameserver
                .parse::<IpAddr>()
                .map(|address| !address.is_loopback())
                .unwrap_or(false)
        });
    }
    host
}

/// The pod's `/etc/resolv.conf`, as kubelet builds it:
/// - `ClusterFirst` (the default): the cluster DNS, searching
///   `<ns>.svc.<domain> svc.<domain> <domain>` and then the host's search
///   domains, `ndots:5`; a host-network pod gets the host's resolver
///   instead, unless its policy is `ClusterFirstWithHostNet`;
/// - `Default`: the host's resolver;
/// - `None`: only what `dnsConfig` says.
///
/// `dnsConfig`'s nameservers and searches are appended and its options
/// set over the policy's. With no cluster DNS configured, `ClusterFirst`
/// falls back to the host's resolver, as kubelet does.
pub fn resolv_conf(pod: &Pod, settings: &NameSettings<'_>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    } && !settings.cluster_dns.is_empty();
    let mut resolver = if policy == "None" {
        Resolver::default()
    } else if cluster_first {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let domain = settings.cluster_domain;
        let mut searches = vec![
            format!("{namespace}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ];
        searches.extend(host_resolver(settings, host_network).searches);
        Resolver {
            nameservers: settings
                .cluster_dns
                .iter()
                .map(ToString::to_string)
                .collect(),
            searches,
            options: vec![("ndots".to_string(), Some("5".to_string()))],
        }
    } else {
        host_resolver(settings, host_network)
    };
    if let Some(config) = &spec.dns_config {
        resolver
            .nameservers
            .extend(config.nameservers.iter().flatten().cloned());
        resolver
            .searches
            .extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref().filter(|name| !name.is_empty()) else {
                continue;
            };
            match &option.value {
                Some(value) => resolver.set_option(&format!("{name}:{value}")),
                None => resolver.set_option(name),
            }
        }
    }
    resolver.render()
}

/// The pod's `/etc/hosts`: loopback names, the pod's own address under
/// its hostname (and its fully qualified name when it has a `subdomain`),
/// then its `hostAliases`. A host-network pod gets the host's file
/// (`None`: do not mount one).
pub fn hosts_file(pod: &Pod, pod_ip: Option<IpAddr>, cluster_domain: &str) -> Option<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.host_network.unwrap_or(false) {
        return None;
    }
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    let hostname = spec
        .hostname
        .clone()
        .filter(|name| !name.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    if let Some(ip) = pod_ip {
        match spec.subdomain.as_deref().filter(|sub| !sub.is_empty()) {
            Some(subdomain) => {
                let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
                text.push_str(&format!(
                    "{ip}\t{hostname}.{subdomain}.{namespace}.svc.{cluster_domain}\t{hostname}\n"
                ));
            }
            None => text.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        text.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.unwrap_or_default();
            if names.is_empty() {
                continue;
            }
            text.push_str(&format!("{}\t{}\n", alias.ip, names.join("\t")));
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    const HOST: &str = "# from DHCP\nsearch corp.example\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\n";

    fn settings(cluster_dns: &[IpAddr]) -> NameSettings<'_> {
        NameSettings {
            cluster_dns,
            cluster_domain: "cluster.local",
            host_resolv_conf: HOST,
        }
    }

    #[test]
    fn cluster_first_searches_the_namespace_first() {
        let dns = ["10.43.0.10".parse().unwrap()];
        let text = resolv_conf(&pod(serde_json::json!({"containers": []})), &settings(&dns));
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
             nameserver 10.43.0.10\n\
             options ndots:5\n"
        );
    }

    #[test]
    fn default_policy_and_host_network_use_the_host_resolver_without_loopback() {
        let dns = ["10.43.0.10".parse().unwrap()];
        let expected = "search corp.example\nnameserver 192.0.2.53\noptions edns0\n";
        let text = resolv_conf(
            &pod(serde_json::json!({"dnsPolicy": "Default"})),
            &settings(&dns),
        );
        assert_eq!(text, expected);
        // A host-network pod shares the host's loopback: its stub answers.
        let text = resolv_conf(
            &pod(serde_json::json!({"hostNetwork": true})),
            &settings(&dns),
        );
        assert!(text.contains("nameserver 127.0.0.53\n"), "{text}");
        let text = resolv_conf(
            &pod(serde_json::json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &settings(&dns),
        );
        assert!(text.starts_with("search shop.svc.cluster.local"), "{text}");
        // No cluster DNS: ClusterFirst falls back to the host's.
        let text = resolv_conf(&pod(serde_json::json!({})), &settings(&[]));
        assert_eq!(text, expected);
    }

    #[test]
    fn dns_config_appends_and_overrides() {
        let dns = ["10.43.0.10".parse().unwrap()];
        let text = resolv_conf(
            &pod(serde_json::json!({"dnsConfig": {
                "nameservers": ["192.0.2.1", "10.43.0.10"],
                "searches": ["extra.example", "svc.cluster.local"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "single-request"}]
            }})),
            &settings(&dns),
        );
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example extra.example\n\
             nameserver 10.43.0.10\nnameserver 192.0.2.1\n\
             options ndots:2 single-request\n"
        );
        let text = resolv_conf(
            &pod(
                serde_json::json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.9"]}}),
            ),
            &settings(&dns),
        );
        assert_eq!(text, "nameserver 192.0.2.9\n");
    }

    #[test]
    fn hosts_name_the_pod_and_its_aliases() {
        let ip = Some("10.42.1.7".parse().unwrap());
        let text = hosts_file(&pod(serde_json::json!({})), ip, "cluster.local").unwrap();
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            text.ends_with("fe00::2\tip6-allrouters\n10.42.1.7\tweb-1\n"),
            "{text}"
        );
        let text = hosts_file(
            &pod(serde_json::json!({
                "hostname": "db-0", "subdomain": "db",
                "hostAliases": [{"ip": "192.0.2.4", "hostnames": ["foo.local", "bar.local"]}]
            })),
            ip,
            "cluster.local",
        )
        .unwrap();
        assert!(
            text.contains("10.42.1.7\tdb-0.db.shop.svc.cluster.local\tdb-0\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\n# Entries added by HostAliases.\n192.0.2.4\tfoo.local\tbar.local\n"),
            "{text}"
        );
        assert_eq!(
            hosts_file(
                &pod(serde_json::json!({"hostNetwork": true})),
                ip,
                "cluster.local"
            ),
            None
        );
    }
}
