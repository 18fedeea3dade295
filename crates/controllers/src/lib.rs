//! shoal's controllers (kube-controller-manager's role): control loops that
//! watch the cluster through the Kubernetes API and write what should be.
//! Each reaches the cluster only through a `kube::Client`.

pub mod nodeipam;
