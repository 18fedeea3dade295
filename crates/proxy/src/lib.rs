//! shoal's service proxy, kube-proxy's role: every node turns the cluster's
//! Services and EndpointSlices into rules in the kernel, so service traffic
//! is translated to a ready endpoint without passing through a process.
//!
//! `model` reads the API objects, `state` keeps what is known and what the
//! kernel holds and plans each sync, `nft` renders the nftables table,
//! `netlink` sends it to the kernel as nf_tables batches, `sync` is the
//! loop the node agent runs, and `iptables`
//! renders the same services as an iptables-restore rule set of
//! kube-proxy's classic shape, only to measure it against nftables
//! (ARCHITECTURE.md, BENCHMARKS.md).

pub mod iptables;
pub mod model;
pub mod netlink;
pub mod nft;
pub mod state;
pub mod sync;

pub use model::{ServiceKey, ServicePort};
pub use nft::{Nft, NftError};
pub use state::{NodeContext, Proxier};
pub use sync::{Observer, ProxyConfig, SyncReport, run};

/// Removes every rule the proxy made (its table): the machine's ruleset is
/// as before the proxy ran. Whether there was a table.
pub fn cleanup() -> Result<bool, NftError> {
    Nft::host().delete_table()
}
