//! The baseline of the daemon's throughput figures (BENCHMARKS.md): a bare axum echo server
//! and a bare tonic echo server ([`bare`]), default settings, on ephemeral loopback ports.
//! Prints `bare http=ADDR grpc=ADDR`, then serves until killed; load comes from h2load, as
//! for the daemon. (`cargo bench --bench daemon_load` starts the same servers itself.)
//!
//! Run: `cargo run --release --example bare_servers`

mod bare;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    bare::run().await
}
