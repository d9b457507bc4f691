//! `plugbay doctor`: what this kernel offers of the sandbox's layers, one line each.

use std::io::Write;

use plugbay_sandbox::probe::{self, KernelReport};

use crate::cli::DoctorArgs;
use crate::commands::{Outcome, print_json};

/// Width of the layer names in the human report.
const LABEL: usize = 20;

/// Runs `plugbay doctor`: [`Outcome::Done`] when every layer is available,
/// [`Outcome::Failed`] when one is missing (each line says why).
///
/// # Errors
/// When stdout cannot be written.
pub fn run(args: &DoctorArgs) -> anyhow::Result<Outcome> {
    let report = probe::probe();
    if args.json {
        print_json(&report)?;
    } else {
        write_human(&mut std::io::stdout().lock(), &report)?;
    }
    Ok(if report.missing().next().is_none() { Outcome::Done } else { Outcome::Failed })
}

/// One line for the kernel, then one per layer: `ok` or `missing`, and the detail.
fn write_human(out: &mut impl Write, report: &KernelReport) -> std::io::Result<()> {
    let user = if report.root { "root" } else { "not root" };
    writeln!(out, "{:<LABEL$}{} (the host runs as {user})", "kernel", report.kernel)?;
    for check in &report.checks {
        let verdict = if check.available { "ok" } else { "missing" };
        writeln!(out, "{:<LABEL$}{verdict}: {}", check.layer.name(), check.detail)?;
    }
    out.flush()
}
