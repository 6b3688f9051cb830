//! XID error accounting from two sources: NVML's event API and the kernel log.
//!
//! NVML cannot report every XID (some are only logged by the kernel driver), and the
//! kernel log cannot be read without privileges; the agent reads both and counts each
//! event once. Both sources name the GPU by PCI bus id and the error by its code, and
//! neither gives a shared event id, so an event from one source is matched to an
//! unmatched event with the same GPU and code from the other source within
//! [`MATCH_WINDOW`]. Matched pairs count once; unmatched events count when they arrive,
//! so nothing waits for a partner that may never come.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use gantry_shared::telemetry::{XidCounts, format_pci_bus_id};

/// How far apart the two sources may see the same event.
pub const MATCH_WINDOW: Duration = Duration::from_secs(10);

/// Where an XID event was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidSource {
    Nvml,
    KernelLog,
}

pub use gantry_shared::xid::{PciAddress, parse_kernel_xid};

#[derive(Debug, Clone, Copy)]
struct Unmatched {
    pci: PciAddress,
    code: u64,
    source: XidSource,
    at: Instant,
}

#[derive(Debug, Default, Clone)]
struct GpuCounts {
    last: u64,
    by_code: BTreeMap<u64, u64>,
}

/// Monotonic per-GPU, per-code XID counters with cross-source de-duplication.
#[derive(Debug, Default)]
pub struct XidLedger {
    counts: BTreeMap<PciAddress, GpuCounts>,
    unmatched: VecDeque<Unmatched>,
}

impl XidLedger {
    /// Records one event; returns whether it was counted (false: it was the other
    /// source's report of an event already counted).
    pub fn record(&mut self, pci: PciAddress, code: u64, source: XidSource, now: Instant) -> bool {
        self.unmatched
            .retain(|u| now.saturating_duration_since(u.at) <= MATCH_WINDOW);
        if let Some(pos) = self
            .unmatched
            .iter()
            .position(|u| u.pci == pci && u.code == code && u.source != source)
        {
            self.unmatched.remove(pos);
            return false;
        }
        self.unmatched.push_back(Unmatched {
            pci,
            code,
            source,
            at: now,
        });
        let gpu = self.counts.entry(pci).or_default();
        gpu.last = code;
        *gpu.by_code.entry(code).or_default() += 1;
        true
    }

    /// Current counts, with NVML indexes resolved through `index_of`.
    pub fn snapshot(&self, index_of: impl Fn(PciAddress) -> Option<u32>) -> Vec<XidCounts> {
        self.counts
            .iter()
            .map(|(&pci, counts)| XidCounts {
                pci_bus_id: format_pci_bus_id(pci),
                gpu: index_of(pci),
                last: counts.last,
                by_code: counts.by_code.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU0: PciAddress = (0, 0x18, 0);
    const GPU1: PciAddress = (0, 0x2a, 0);

    #[test]
    fn the_same_event_from_both_sources_counts_once() {
        let mut ledger = XidLedger::default();
        let t = Instant::now();
        assert!(ledger.record(GPU0, 79, XidSource::Nvml, t));
        assert!(!ledger.record(GPU0, 79, XidSource::KernelLog, t + Duration::from_secs(1)));
        let snap = ledger.snapshot(|_| Some(0));
        assert_eq!(snap[0].by_code[&79], 1);
    }

    #[test]
    fn repeated_events_from_one_source_each_count() {
        let mut ledger = XidLedger::default();
        let t = Instant::now();
        assert!(ledger.record(GPU0, 48, XidSource::Nvml, t));
        assert!(ledger.record(GPU0, 48, XidSource::Nvml, t));
        // The kernel log reports both; each matches one NVML event.
        assert!(!ledger.record(GPU0, 48, XidSource::KernelLog, t));
        assert!(!ledger.record(GPU0, 48, XidSource::KernelLog, t));
        assert_eq!(ledger.snapshot(|_| None)[0].by_code[&48], 2);
    }

    #[test]
    fn events_outside_the_window_are_separate() {
        let mut ledger = XidLedger::default();
        let t = Instant::now();
        assert!(ledger.record(GPU0, 13, XidSource::KernelLog, t));
        assert!(ledger.record(
            GPU0,
            13,
            XidSource::Nvml,
            t + MATCH_WINDOW + Duration::from_secs(1)
        ));
        assert_eq!(ledger.snapshot(|_| None)[0].by_code[&13], 2);
    }

    #[test]
    fn different_gpus_and_codes_do_not_match() {
        let mut ledger = XidLedger::default();
        let t = Instant::now();
        assert!(ledger.record(GPU0, 48, XidSource::Nvml, t));
        assert!(ledger.record(GPU1, 48, XidSource::KernelLog, t));
        assert!(ledger.record(GPU0, 63, XidSource::KernelLog, t));
        let snap = ledger.snapshot(|pci| (pci == GPU1).then_some(1));
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].last, 63);
        assert_eq!(snap[0].gpu, None);
        assert_eq!(snap[1].gpu, Some(1));
        assert_eq!(snap[1].pci_bus_id, "00000000:2A:00.0");
    }
}
