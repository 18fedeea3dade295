//! Resource quantities as the scheduler counts them: CPU in millicores,
//! everything else in whole units (bytes, pods, devices), and a pod's
//! requests summed the way kube-scheduler sums them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// What a pod that requests no CPU is counted as when nodes are scored
/// (kube-scheduler's `DefaultMilliCPURequest`), so empty pods still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory counterpart (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of the resources a node offers and a pod requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Extended resources (`nvidia.com/gpu`, hugepages …), by name, sorted.
    pub scalar: Vec<(String, i64)>,
}

impl Resources {
    /// Reads a `capacity`, `allocatable` or `requests` map. Unknown or
    /// malformed quantities count as zero: the API server validates them.
    pub fn from_map(map: &BTreeMap<String, Quantity>) -> Resources {
        let mut resources = Resources::default();
        for (name, quantity) in map {
            match name.as_str() {
                "cpu" => resources.milli_cpu = parse_milli(&quantity.0).unwrap_or(0),
                "memory" => resources.memory = parse_units(&quantity.0).unwrap_or(0),
                "ephemeral-storage" => {
                    resources.ephemeral_storage = parse_units(&quantity.0).unwrap_or(0)
                }
                "pods" => {}
                other if is_scalar_resource(other) => {
                    let amount = parse_units(&quantity.0).unwrap_or(0);
                    resources.scalar.push((other.to_string(), amount));
                }
                _ => {}
            }
        }
        resources
    }

    /// The amount of extended resource `name`.
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .iter()
            .find(|(scalar, _)| scalar == name)
            .map_or(0, |(_, amount)| *amount)
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        for (name, amount) in &other.scalar {
            match self.scalar.iter_mut().find(|(scalar, _)| scalar == name) {
                Some((_, total)) => *total += amount,
                None => self.scalar.push((name.clone(), *amount)),
            }
        }
    }

    pub fn subtract(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        for (name, amount) in &other.scalar {
            if let Some((_, total)) = self.scalar.iter_mut().find(|(scalar, _)| scalar == name) {
                *total -= amount;
            }
        }
    }

    /// Each resource the larger of the two (an init container runs alone).
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (name, amount) in &other.scalar {
            match self.scalar.iter_mut().find(|(scalar, _)| scalar == name) {
                Some((_, total)) => *total = (*total).max(*amount),
                None => self.scalar.push((name.clone(), *amount)),
            }
        }
    }
}

/// Extended resources: a domain-prefixed name outside `kubernetes.io/`, or
/// huge pages; these are counted like CPU and memory.
fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/"))
        || name.starts_with("requests.")
}

/// A node's pod limit from its `allocatable` (`pods`), 0 when absent.
pub fn pod_limit(map: &BTreeMap<String, Quantity>) -> i64 {
    map.get("pods")
        .and_then(|quantity| parse_units(&quantity.0))
        .unwrap_or(0)
}

/// A pod's requests and its requests for scoring (zero CPU and memory
/// replaced by the defaults), as kube-scheduler computes them: the sum of
/// its containers, at least the largest init container, plus its overhead.
/// A container without requests but with limits requests its limits (the
/// API server's defaulting, applied here in case it was not).
pub fn pod_requests(pod: &Pod) -> (Resources, (i64, i64)) {
    let Some(spec) = &pod.spec else {
        return (
            Resources::default(),
            (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST),
        );
    };
    let mut total = Resources::default();
    let mut non_zero_cpu = 0;
    let mut non_zero_memory = 0;
    for container in &spec.containers {
        let requests = container_requests(container);
        non_zero_cpu += if requests.milli_cpu == 0 {
            DEFAULT_MILLI_CPU_REQUEST
        } else {
            requests.milli_cpu
        };
        non_zero_memory += if requests.memory == 0 {
            DEFAULT_MEMORY_REQUEST
        } else {
            requests.memory
        };
        total.add(&requests);
    }
    for init in spec.init_containers.iter().flatten() {
        let requests = container_requests(init);
        // A restartable init container (a sidecar) runs beside the others.
        if init.restart_policy.as_deref() == Some("Always") {
            total.add(&requests);
        } else {
            total.max_with(&requests);
            non_zero_cpu = non_zero_cpu.max(requests.milli_cpu);
            non_zero_memory = non_zero_memory.max(requests.memory);
        }
    }
    if let Some(overhead) = &spec.overhead {
        let overhead = Resources::from_map(overhead);
        non_zero_cpu += overhead.milli_cpu;
        non_zero_memory += overhead.memory;
        total.add(&overhead);
    }
    (total, (non_zero_cpu, non_zero_memory))
}

fn container_requests(container: &Container) -> Resources {
    let Some(resources) = &container.resources else {
        return Resources::default();
    };
    let mut merged = resources.limits.clone().unwrap_or_default();
    for (name, quantity) in resources.requests.iter().flatten() {
        merged.insert(name.clone(), quantity.clone());
    }
    Resources::from_map(&merged)
}

/// A quantity in thousandths, rounded up (`100m` → 100, `1.5` → 1500).
pub fn parse_milli(text: &str) -> Option<i64> {
    parse_scaled(text, 1000.0)
}

/// A quantity in whole units, rounded up (`1Gi`, `500M`, `3`).
pub fn parse_units(text: &str) -> Option<i64> {
    parse_scaled(text, 1.0)
}

fn parse_scaled(text: &str, scale: f64) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            10f64.powi(exponent[1..].parse::<i32>().ok()?)
        }
        _ => return None,
    };
    let value = number * multiplier * scale;
    // Round up, as resource.Quantity's Value and MilliValue do, but let a
    // value a float's error above a whole number stay that number.
    let rounded = value.round();
    let result = if (value - rounded).abs() < 1e-6 {
        rounded
    } else {
        value.ceil()
    };
    Some(result as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_in_their_units() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("32"), Some(32_000));
        assert_eq!(parse_milli("1u"), Some(1));
        assert_eq!(parse_units("256Gi"), Some(256 << 30));
        assert_eq!(parse_units("500M"), Some(500_000_000));
        assert_eq!(parse_units("110"), Some(110));
        assert_eq!(parse_units("1e3"), Some(1000));
        assert_eq!(parse_units("12Zi"), None);
        assert_eq!(parse_units("lots"), None);
    }
}
