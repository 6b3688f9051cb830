//! What serving a model has shown: the recent window that health checks judge, and the
//! cumulative counters of Triton's statistics extension.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use super::GoldenFailure;

/// Requests kept for the error rate and latency percentiles.
pub(super) const RECENT: usize = 1024;

/// A count and the time it took in all, as Triton reports each phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Phase {
    pub count: u64,
    pub ns: u64,
}

impl Phase {
    fn add(&mut self, took: Duration) {
        self.count += 1;
        self.ns = self
            .ns
            .saturating_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Triton's `inference_stats`: successes and failures with their whole request time,
/// and for successes the time queued and in each phase of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InferenceStats {
    pub success: Phase,
    pub fail: Phase,
    pub queue: Phase,
    pub compute_input: Phase,
    pub compute_infer: Phase,
    pub compute_output: Phase,
    /// No response cache: always zero, present because clients read it.
    pub cache_hit: Phase,
    pub cache_miss: Phase,
}

/// One batch size's phases (Triton's `batch_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchStats {
    pub batch_size: u64,
    pub compute_input: Phase,
    pub compute_infer: Phase,
    pub compute_output: Phase,
}

/// Where one successful request spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub queue: Duration,
    pub run: crate::inference::RunTimes,
    /// Rows the run held (the batch size; 1 for a model without a batch dimension).
    pub batch_size: u64,
    /// Rows of this request (less than `batch_size` when the run was batched).
    pub rows: u64,
    /// Whether this request counts the run: the first of its batch does.
    pub executed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Stats {
    pub(super) ok: u64,
    pub(super) failed: u64,
    pub(super) rejected: u64,
    /// (succeeded, seconds) of the latest requests.
    recent: VecDeque<(bool, f64)>,
    pub(super) golden: Option<Result<(), GoldenFailure>>,
    pub(super) inference: InferenceStats,
    /// Inferences (rows) served, and model executions.
    pub(super) inference_count: u64,
    pub(super) execution_count: u64,
    /// Milliseconds since the Unix epoch of the latest request; 0 before the first.
    pub(super) last_inference_ms: u64,
    pub(super) batches: std::collections::BTreeMap<u64, BatchStats>,
}

/// What the latest requests show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Recent {
    pub(super) error_rate: f64,
    pub(super) requests: usize,
    pub(super) p50: Option<f64>,
    pub(super) p99: Option<f64>,
}

impl Stats {
    /// One request served (`ok`) or failed, in `seconds`; the window keeps [`RECENT`].
    pub(super) fn record(&mut self, ok: bool, seconds: f64) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((ok, seconds));
    }

    /// A request that succeeded in `total`, with where its time went.
    pub(super) fn success(&mut self, total: Duration, timing: Timing, now_ms: u64) {
        self.record(true, total.as_secs_f64());
        let s = &mut self.inference;
        s.success.add(total);
        s.queue.add(timing.queue);
        s.compute_input.add(timing.run.input);
        s.compute_infer.add(timing.run.infer);
        s.compute_output.add(timing.run.output);
        self.inference_count += timing.rows;
        self.last_inference_ms = now_ms;
        if !timing.executed {
            return;
        }
        self.execution_count += 1;
        let batch = self
            .batches
            .entry(timing.batch_size)
            .or_insert_with(|| BatchStats {
                batch_size: timing.batch_size,
                ..BatchStats::default()
            });
        batch.compute_input.add(timing.run.input);
        batch.compute_infer.add(timing.run.infer);
        batch.compute_output.add(timing.run.output);
    }

    /// A request the model failed, after `total`.
    pub(super) fn failure(&mut self, total: Duration, now_ms: u64) {
        self.record(false, total.as_secs_f64());
        self.inference.fail.add(total);
        self.last_inference_ms = now_ms;
    }

    /// The window's failed share and the latency percentiles of its successes.
    pub(super) fn recent_figures(&self) -> Recent {
        let mut latencies: Vec<f64> = self.recent.iter().filter(|r| r.0).map(|r| r.1).collect();
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| -> Option<f64> {
            let last = latencies.len().checked_sub(1)?;
            Some(latencies[((last as f64) * q).round() as usize])
        };
        let failed = self.recent.iter().filter(|r| !r.0).count();
        Recent {
            error_rate: if self.recent.is_empty() {
                0.0
            } else {
                failed as f64 / self.recent.len() as f64
            },
            requests: self.recent.len(),
            p50: quantile(0.5),
            p99: quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_latest_requests_and_failures_count_against_the_rate_only() {
        let mut stats = Stats::default();
        assert_eq!(
            stats.recent_figures(),
            Recent {
                error_rate: 0.0,
                requests: 0,
                p50: None,
                p99: None
            }
        );
        // 1 024 fast failures, then 1 000 successes of 1 ms to 1 000 ms.
        for _ in 0..RECENT {
            stats.record(false, 0.0001);
        }
        for ms in 1..=1000 {
            stats.record(true, f64::from(ms) / 1000.0);
        }
        let recent = stats.recent_figures();
        assert_eq!(recent.requests, RECENT, "the window is bounded");
        assert!(
            (recent.error_rate - 24.0 / 1024.0).abs() < 1e-12,
            "{recent:?}"
        );
        assert_eq!(recent.p50, Some(0.501), "failures never count as latencies");
        assert_eq!(recent.p99, Some(0.99));
        assert_eq!(
            (stats.ok, stats.failed),
            (1000, 1024),
            "totals keep counting"
        );
    }

    #[test]
    fn successes_count_their_phases_and_batch_sizes_as_triton_does() {
        let mut stats = Stats::default();
        let ms = Duration::from_millis;
        let timing = |batch_size| Timing {
            queue: ms(1),
            run: crate::inference::RunTimes {
                input: ms(2),
                infer: ms(3),
                output: ms(4),
            },
            batch_size,
            rows: batch_size,
            executed: true,
        };
        stats.success(ms(10), timing(1), 5);
        stats.success(ms(20), timing(4), 6);
        stats.failure(ms(7), 9);
        let s = stats.inference;
        assert_eq!(
            s.success,
            Phase {
                count: 2,
                ns: 30_000_000
            }
        );
        assert_eq!(
            s.fail,
            Phase {
                count: 1,
                ns: 7_000_000
            }
        );
        assert_eq!(
            s.queue,
            Phase {
                count: 2,
                ns: 2_000_000
            }
        );
        assert_eq!(
            s.compute_infer,
            Phase {
                count: 2,
                ns: 6_000_000
            }
        );
        assert_eq!((stats.inference_count, stats.execution_count), (5, 2));
        assert_eq!(stats.last_inference_ms, 9);
        assert_eq!(
            stats.batches.keys().copied().collect::<Vec<_>>(),
            [1, 4],
            "one entry per batch size"
        );
        assert_eq!(
            stats.batches[&4].compute_output,
            Phase {
                count: 1,
                ns: 4_000_000
            }
        );
    }
}
