//! Fuzzes `plugin.toml` parsing: any bytes must give a manifest or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    plugbay_core::manifest::fuzz_parse(data);
});
