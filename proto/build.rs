//! Compiles the .proto files under this crate with `protox` (pure Rust, no
//! system `protoc`) and generates prost messages plus tonic clients/servers.

const PROTOS: &[&str] = &[
    "etcd/kv.proto",
    "etcd/auth.proto",
    "etcd/rpc.proto",
    "ferrocd/raft.proto",
    "ferrocd/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    // Include root is the crate directory, so imports read `etcd/kv.proto`.
    let fds = protox::compile(
        ["etcd/rpc.proto", "ferrocd/raft.proto", "ferrocd/peer.proto"],
        ["."],
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
