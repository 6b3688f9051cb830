//! A real Prometheus (Debian's package, which `scripts/test.sh` unpacks into the cache
//! and puts on PATH) scraping the test's agents and controller, with rule files loaded,
//! and what the tests read from it over its HTTP API; and the metric names a `PromQL`
//! expression reads, to hold dashboards and rules to what the endpoints serve.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus; stopped when dropped.
#[allow(missing_debug_implementations)]
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping each `(job, targets)` every second and evaluating
    /// `rule_files` every second.
    pub fn start(jobs: &[(&str, Vec<SocketAddr>)], rule_files: &[&Path]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n",
        );
        for f in rule_files {
            let _ = writeln!(config, "  - {:?}", f.display().to_string());
        }
        config.push_str("scrape_configs:\n");
        for (job, targets) in jobs {
            let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
            let _ = write!(
                config,
                "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            );
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = crate::free_tcp_port();
        let child = spawn(dir.path(), addr, &[]);
        let prometheus = Self { child, addr, dir };
        prometheus.wait_ready();
        prometheus
    }

    /// Starts Prometheus as a remote-write receiver (`--web.enable-remote-write-receiver`),
    /// scraping nothing.
    pub fn receiver() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            "global:\n  evaluation_interval: 1s\n",
        )
        .unwrap();
        let addr = crate::free_tcp_port();
        let child = spawn(dir.path(), addr, RECEIVER);
        let prometheus = Self { child, addr, dir };
        prometheus.wait_ready();
        prometheus
    }

    /// Stops Prometheus as systemd would (SIGTERM, then waits for it to exit).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Starts a stopped receiver again on the same address and data.
    pub fn start_again(&mut self) {
        self.child = spawn(self.dir.path(), self.addr, RECEIVER);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while crate::http_status(self.addr, "/-/ready") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Prometheus did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Prometheus' own log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET path` on the API; its `data`, after checking the answer says `success`.
    pub fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let body = crate::http_get(self.addr, path).ok_or("Prometheus does not answer")?;
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if json["status"] == "success" {
            Ok(json["data"].clone())
        } else {
            Err(format!("{}: {}", json["errorType"], json["error"]))
        }
    }

    /// Evaluates `query` now: each result's labels and value, or Prometheus' error.
    pub fn query(&self, query: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(query)))?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        Ok(result
            .into_iter()
            .filter_map(|r| {
                let v = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), v))
            })
            .collect())
    }
}

/// The flags of a remote-write receiver.
const RECEIVER: &[&str] = &["--web.enable-remote-write-receiver"];

/// Runs `prometheus` on `dir/prometheus.yml`, its data in `dir/data`, its log appended
/// to `dir/prometheus.log`.
fn spawn(dir: &Path, addr: SocketAddr, extra: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("prometheus.log"))
        .unwrap();
    Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "prometheus is needed for this test and could not be run ({e}); `scripts/test.sh` \
                 unpacks Debian's `prometheus` package into .cache/tools and puts it on PATH"
            )
        })
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `PromQL` keywords that read like identifiers.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    // Aggregations, which may read `sum by (x) (...)`: no parenthesis right after.
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names `expr` selects: every identifier that is not a function, a keyword,
/// a label (inside `{}` or a grouping clause), a string, a duration or a dashboard
/// variable (`$job`, `${job}`, `$__rate_interval`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    // Strings, label matchers and ranges go first: they hold no metric names.
    let mut plain = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let quote = c;
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == quote {
                        break;
                    }
                }
                plain.push(' ');
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            '$' => {
                // A dashboard variable: `$name` or `${name}`.
                while chars
                    .peek()
                    .is_some_and(|d| d.is_ascii_alphanumeric() || "_{}:".contains(*d))
                {
                    chars.next();
                }
                plain.push('1');
            }
            _ => plain.push(c),
        }
    }
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = plain.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let mut j = i;
            while j < bytes.len() && bytes[j].is_whitespace() {
                j += 1;
            }
            let call = bytes.get(j) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                // `by (...)`, `on (...)`, `group_left (...)`: labels follow.
                let labels_follow = call
                    && matches!(
                        lower.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    );
                if labels_follow {
                    let mut depth = 0;
                    while j < bytes.len() {
                        match bytes[j] {
                            '(' => depth += 1,
                            ')' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                    i = j + 1;
                }
            } else if !call {
                names.insert(word);
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number (1e6, 0.5) or a duration: not a name.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn only_metric_names_are_read_from_an_expression() {
        assert_eq!(
            names(
                r#"sum by (Hostname, gpu, xid) (increase(gantry_gpu_xid_errors_total{job=~"$job", xid=~"48|79"}[$__rate_interval])) > 0"#
            ),
            ["gantry_gpu_xid_errors_total"]
        );
        assert_eq!(
            names(
                "time() - gantry_node_last_sample_timestamp_seconds > 600 and gantry_node_connected == 0"
            ),
            [
                "gantry_node_connected",
                "gantry_node_last_sample_timestamp_seconds"
            ]
        );
        assert_eq!(
            names(r#"DCGM_FI_DEV_FB_USED{gpu=~"$gpu"} * 1048576 + 1e6 or vector(0)"#),
            ["DCGM_FI_DEV_FB_USED"]
        );
        assert_eq!(
            names("a / on (node) group_left (model) b unless ignoring(x) c offset 5m"),
            ["a", "b", "c"]
        );
        assert_eq!(
            names("floor(DCGM_FI_DEV_CLOCK_THROTTLE_REASONS / 32) % 2 == 1"),
            ["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"]
        );
    }
}
