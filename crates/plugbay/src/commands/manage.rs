//! `plugbay reload|stop|start ID`, `plugbay events` and `plugbay crashes`: requests to the
//! running daemon.

use std::io::Write as _;

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use hyper::Method;
use plugbay_core::PluginInfo;

use crate::cli::{CrashesArgs, EventsArgs, PluginArgs};
use crate::client::{Daemon, segment};
use crate::commands::{Outcome, print_json};

/// Runs `plugbay reload|stop|start ID` (`action`): prints `ID: STATE` when done, the
/// daemon's error otherwise.
///
/// # Errors
/// When the daemon cannot be reached.
pub async fn plugin(args: &PluginArgs, action: &str) -> anyhow::Result<Outcome> {
    let daemon = Daemon::new(&args.daemon.addr);
    let path = format!("/v1/plugins/{}/{action}", segment(&args.id));
    match daemon.exchange(Method::POST, &path, None, &[]).await? {
        Ok((_, body)) => {
            let info: PluginInfo =
                serde_json::from_slice(&body).context("the daemon's answer is not what plugbay expects")?;
            println!("{}: {}", info.id, info.state);
            Ok(Outcome::Done)
        }
        Err(error) => {
            eprintln!("error: {}", error.message);
            Ok(Outcome::Failed)
        }
    }
}

/// Runs `plugbay events`: prints each event's JSON on its own line as it arrives, until
/// the daemon ends the stream (it shuts down) or the command is interrupted.
///
/// # Errors
/// When the daemon cannot be reached or stdout cannot be written.
pub async fn events(args: &EventsArgs) -> anyhow::Result<Outcome> {
    let daemon = Daemon::new(&args.daemon.addr);
    let path = format!("/v1/events?topic={}", segment(&args.topic));
    let response = daemon.send(Method::GET, &path, None, &[]).await?;
    if !response.status().is_success() {
        let body =
            response.into_body().collect().await.context("cannot read the daemon's answer")?.to_bytes();
        eprintln!("error: {}", String::from_utf8_lossy(&body));
        return Ok(Outcome::Failed);
    }
    let mut body = response.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.context("the event stream broke")?.into_data() else { continue };
        pending.extend_from_slice(&data);
        // SSE lines end in \n; print the `data:` ones, keep a partial line for later.
        while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(data) = line.strip_prefix(b"data: ") {
                let mut out = std::io::stdout().lock();
                out.write_all(data)?;
                out.flush()?;
            }
        }
    }
    Ok(Outcome::Done)
}

/// Runs `plugbay crashes [ID]`: the daemon's crash reports, oldest first.
///
/// # Errors
/// When the daemon cannot be reached, answers something unexpected, or stdout cannot be
/// written.
pub async fn crashes(args: &CrashesArgs) -> anyhow::Result<Outcome> {
    let daemon = Daemon::new(&args.daemon.addr);
    let path = match &args.id {
        Some(id) => format!("/v1/crashes?plugin={}", segment(id)),
        None => "/v1/crashes".to_owned(),
    };
    let body = match daemon.exchange(Method::GET, &path, None, &[]).await? {
        Ok((_, body)) => body,
        Err(error) => {
            eprintln!("error: {}", error.message);
            return Ok(Outcome::Failed);
        }
    };
    let reports: Vec<plugbay_core::events::CrashReport> =
        serde_json::from_slice(&body).context("the daemon's crash reports are not what plugbay expects")?;
    if args.json {
        print_json(&reports)?;
        return Ok(Outcome::Done);
    }
    if reports.is_empty() {
        eprintln!("no crashes");
    }
    let mut out = std::io::stdout().lock();
    for report in &reports {
        writeln!(out, "{} ms  {}#{}  {}", report.time_ms, report.plugin, report.instance, report.action)?;
        for line in report.reason.lines() {
            writeln!(out, "    {line}")?;
        }
        for call in &report.last_calls {
            let (method, bytes, us, outcome) =
                (&call.method, call.payload_bytes, call.duration_us, &call.outcome);
            writeln!(out, "    call {method} ({bytes} B, {us} us): {outcome}")?;
        }
    }
    Ok(Outcome::Done)
}
