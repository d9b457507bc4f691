//! `kv-store` as a process plugin: the same [`kv_store::KvStore`] type as the native
//! library, served by `plugbay_sdk::serve` (docs/process-protocol.md). Built with
//! `--features process`; its manifest is `plugin-process.toml`. Its data survives a crash of
//! the process: the host keeps the last snapshot and restores it into the next instance.

fn main() {
    plugbay_sdk::serve::<kv_store::KvStore>()
}
