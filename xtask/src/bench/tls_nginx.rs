//! Scenario `tls-nginx`: the `http1-nginx` rounds over HTTPS. The agent captures the plaintext
//! with uprobes on the system libssl's SSL_read/SSL_write (and `_ex`); wrk maps the same library,
//! so its calls trap too (the kernel filter drops them, but the trap is part of the cost). The
//! throughput ratio against untraced TLS rounds in the same run is the cost of the TLS capture.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Result;
use serde_json::{Value, json};

use super::http1_nginx::{self, Variant};
use super::{BenchArgs, results_dir, write_json};

const TLS: Variant = Variant {
    name: "tls-nginx",
    tls: true,
    // The ratio is what this scenario reports; no goal has been set for it.
    min_throughput_ratio: None,
};

/// Runs the scenario. `invocation_start`: when this `cargo xtask bench` began, so that an
/// `http1-nginx.json` written since (by `all`) is shown alongside for context.
pub fn run(args: &BenchArgs, invocation_start: SystemTime) -> Result<()> {
    let mut summary = http1_nginx::measure(args, &TLS)?;
    let plain = results_dir()
        .ok()
        .map(|dir| dir.join("http1-nginx.json"))
        .and_then(|path| plain_http_ratios(&path, invocation_start));
    match &plain {
        Some(ratios) => {
            let text: Vec<String> = ratios
                .iter()
                .map(|(path, r)| format!("{path} {}", r.map_or("-".into(), |r| format!("{r:.3}"))))
                .collect();
            println!(
                "  context: http1-nginx (plain HTTP, this invocation) throughput ratio {}",
                text.join(", ")
            );
            summary["http1_nginx_context"] = json!(
                ratios
                    .iter()
                    .map(|(path, r)| json!({"path": path, "throughput_ratio_median": r}))
                    .collect::<Vec<_>>()
            );
        }
        None => summary["http1_nginx_context"] = Value::Null,
    }
    let path = write_json(TLS.name, &summary)?;
    println!("results: {}", path.display());
    Ok(())
}

/// Per-path throughput ratios from an `http1-nginx.json` written at or after `since`.
fn plain_http_ratios(path: &Path, since: SystemTime) -> Option<Vec<(String, Option<f64>)>> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let value: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    ratios_of(&value)
}

fn ratios_of(summary: &Value) -> Option<Vec<(String, Option<f64>)>> {
    let paths = summary["paths"].as_array()?;
    let ratios: Vec<(String, Option<f64>)> = paths
        .iter()
        .filter_map(|p| {
            let path = p["path"].as_str()?.to_string();
            Some((path, p["throughput_ratio_median"].as_f64()))
        })
        .collect();
    (!ratios.is_empty()).then_some(ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plain_http_ratios() {
        let v: Value = serde_json::from_str(
            r#"{"paths": [{"path": "/ok", "throughput_ratio_median": 0.91},
                          {"path": "/static.html", "throughput_ratio_median": null}]}"#,
        )
        .unwrap();
        assert_eq!(
            ratios_of(&v),
            Some(vec![
                ("/ok".to_string(), Some(0.91)),
                ("/static.html".to_string(), None)
            ])
        );
        assert_eq!(ratios_of(&json!({"paths": []})), None);
        assert_eq!(ratios_of(&Value::Null), None);
    }

    #[test]
    fn ignores_results_older_than_the_invocation() {
        let dir = crate::bench::TempDir::new("periscope-tls-nginx-test").unwrap();
        let path = dir.path().join("http1-nginx.json");
        std::fs::write(
            &path,
            r#"{"paths": [{"path": "/ok", "throughput_ratio_median": 0.9}]}"#,
        )
        .unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(plain_http_ratios(&path, later), None);
        let earlier = SystemTime::UNIX_EPOCH;
        assert!(plain_http_ratios(&path, earlier).is_some());
    }
}
