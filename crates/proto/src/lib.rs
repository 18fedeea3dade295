//! etcd v3 wire types (`mvccpb`, `authpb`, `etcdserverpb`, the `v3lockpb` and
//! `v3electionpb` services) and shoal's peer protocol (`shoalpb`), generated at
//! build time from the `.proto` files beside this crate.

#![allow(clippy::all, clippy::pedantic, rust_2018_idioms)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod authpb {
    tonic::include_proto!("authpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

pub mod shoalpb {
    tonic::include_proto!("shoalpb");
}

pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
