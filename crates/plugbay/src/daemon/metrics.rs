//! `/metrics`: the host's [`MetricsSnapshot`] in the Prometheus text format (0.0.4). The
//! counting happens in the library with atomics; this only writes the numbers out.

use std::fmt::Write as _;

use plugbay_core::metrics::{LATENCY_BUCKETS_SECONDS, PluginMetrics};
use plugbay_core::{MetricsSnapshot, State};

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A per-plugin series: name, type, help, and the value of one plugin.
type PerPlugin = (&'static str, &'static str, &'static str, fn(&PluginMetrics) -> u64);

/// Renders the snapshot.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(4096);
    let loaded = snapshot.plugins.iter().filter(|plugin| plugin.state == State::Running).count();
    header(&mut out, "plugbay_plugins_loaded", "gauge", "Plugins running now.");
    let _ = writeln!(out, "plugbay_plugins_loaded {loaded}");

    header(&mut out, "plugbay_plugin_state", "gauge", "1 for the state each plugin is in, 0 for the others.");
    for plugin in &snapshot.plugins {
        for state in State::ALL {
            let value = u8::from(plugin.state == state);
            let _ = writeln!(
                out,
                "plugbay_plugin_state{{plugin=\"{}\",state=\"{state}\"}} {value}",
                escape(&plugin.id)
            );
        }
    }
    let per_plugin: [PerPlugin; 3] = [
        ("plugbay_plugin_instances", "gauge", "Instances serving calls, per plugin.", |p: &PluginMetrics| {
            p.instances as u64
        }),
        (
            "plugbay_plugin_restarts_total",
            "counter",
            "Restarts by the supervisor (crashes, failed health checks, failed starts), per plugin.",
            |p: &PluginMetrics| p.restarts,
        ),
        (
            "plugbay_plugin_stuck_calls_total",
            "counter",
            "In-process calls seen running past their timeout (not pre-emptible), per plugin.",
            |p: &PluginMetrics| p.stuck_calls,
        ),
    ];
    for (name, kind, help, value) in per_plugin {
        header(&mut out, name, kind, help);
        for plugin in &snapshot.plugins {
            let _ = writeln!(out, "{name}{{plugin=\"{}\"}} {}", escape(&plugin.id), value(plugin));
        }
    }

    header(&mut out, "plugbay_calls_total", "counter", "Calls that reached a plugin, per plugin and method.");
    for_methods(snapshot, |plugin, method| {
        let _ = writeln!(
            out,
            "plugbay_calls_total{{plugin=\"{plugin}\",method=\"{}\"}} {}",
            escape(&method.method),
            method.calls
        );
    });
    header(&mut out, "plugbay_call_errors_total", "counter", "Failed calls, per plugin, method and code.");
    for_methods(snapshot, |plugin, method| {
        for (code, count) in &method.errors {
            let _ = writeln!(
                out,
                "plugbay_call_errors_total{{plugin=\"{plugin}\",method=\"{}\",code=\"{code}\"}} {count}",
                escape(&method.method)
            );
        }
    });
    for (code, count) in &snapshot.unrouted_errors {
        let _ = writeln!(out, "plugbay_call_errors_total{{plugin=\"\",method=\"\",code=\"{code}\"}} {count}");
    }
    header(
        &mut out,
        "plugbay_call_duration_seconds",
        "histogram",
        "Call latency, per plugin and method: every call of a process plugin, one in 8 of a native one.",
    );
    for_methods(snapshot, |plugin, method| {
        let labels = format!("plugin=\"{plugin}\",method=\"{}\"", escape(&method.method));
        let bounds = LATENCY_BUCKETS_SECONDS.iter().map(|bound| bound.to_string()).chain(["+Inf".to_owned()]);
        for (bound, count) in bounds.zip(&method.cumulative_buckets) {
            let _ = writeln!(out, "plugbay_call_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "plugbay_call_duration_seconds_sum{{{labels}}} {}", method.sum_seconds);
        let _ = writeln!(out, "plugbay_call_duration_seconds_count{{{labels}}} {}", method.timed);
    });
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn for_methods(
    snapshot: &MetricsSnapshot,
    mut each: impl FnMut(&str, &plugbay_core::metrics::MethodMetrics),
) {
    for plugin in &snapshot.plugins {
        let id = escape(&plugin.id);
        for method in &plugin.methods {
            each(&id, method);
        }
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use plugbay_core::metrics::MethodMetrics;

    use super::*;

    #[test]
    fn histograms_and_states_are_written_in_the_text_format() {
        let snapshot = MetricsSnapshot {
            plugins: vec![PluginMetrics {
                id: "kv".into(),
                state: State::Running,
                instances: 1,
                restarts: 2,
                stuck_calls: 0,
                methods: vec![MethodMetrics {
                    method: "get".into(),
                    calls: 3,
                    timed: 3,
                    errors: vec![(plugbay_core::Code::NotFound, 1)],
                    cumulative_buckets: vec![3; LATENCY_BUCKETS_SECONDS.len() + 1],
                    sum_seconds: 0.5,
                }],
            }],
            unrouted_errors: Vec::new(),
        };
        let text = render(&snapshot);
        for line in [
            "plugbay_plugins_loaded 1",
            "plugbay_plugin_state{plugin=\"kv\",state=\"running\"} 1",
            "plugbay_plugin_state{plugin=\"kv\",state=\"failed\"} 0",
            "plugbay_plugin_restarts_total{plugin=\"kv\"} 2",
            "plugbay_calls_total{plugin=\"kv\",method=\"get\"} 3",
            "plugbay_call_errors_total{plugin=\"kv\",method=\"get\",code=\"not_found\"} 1",
            "plugbay_call_duration_seconds_bucket{plugin=\"kv\",method=\"get\",le=\"+Inf\"} 3",
            "plugbay_call_duration_seconds_count{plugin=\"kv\",method=\"get\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
