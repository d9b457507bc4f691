//! `text-tools` as a process plugin: the same [`text_tools::TextTools`] type as the native
//! library, served over gRPC by `plugbay_sdk::serve` (docs/process-protocol.md). Built with
//! `--features process`; its manifest is `plugin-process.toml`.

fn main() {
    plugbay_sdk::serve::<text_tools::TextTools>()
}
