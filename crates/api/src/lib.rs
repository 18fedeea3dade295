//! The etcd v3 gRPC API.
