//! Follows the kernel log for `NVRM: Xid` lines.
//!
//! `/dev/kmsg` is opened non-blocking and positioned at its end: XIDs are counted from
//! the agent's start, like NVML events. Each `read` of `/dev/kmsg` returns one record;
//! `EPIPE` means the ring buffer overwrote records we had not read yet, which is logged
//! and skipped. A regular file (used by tests, or a persistent log) is followed like
//! `tail -F`: from its end, restarting from the beginning when it shrinks.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::xid::{PciAddress, parse_kernel_xid};

/// Upper bound on bytes read per poll, so a log flood cannot stall sampling.
const MAX_BYTES_PER_POLL: usize = 1 << 20;

#[derive(Debug)]
pub struct KernelLog {
    path: PathBuf,
    file: File,
    is_regular: bool,
    position: u64,
    partial: Vec<u8>,
}

impl KernelLog {
    /// Opens the log and moves to its end.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
            .open(path)?;
        let is_regular = file.metadata()?.is_file();
        let position = file.seek(SeekFrom::End(0))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            is_regular,
            position,
            partial: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was logged since the last poll and returns the XIDs found.
    pub fn poll(&mut self) -> Vec<(PciAddress, u64)> {
        let shrank = self.is_regular
            && self
                .file
                .metadata()
                .is_ok_and(|meta| meta.len() < self.position);
        if shrank {
            tracing::debug!(path = %self.path.display(), "kernel log shrank; reading it from the start");
            self.position = self.file.seek(SeekFrom::Start(0)).unwrap_or(0);
            self.partial.clear();
        }
        let mut found = Vec::new();
        let mut buf = [0u8; 8192];
        let mut total = 0;
        while total < MAX_BYTES_PER_POLL {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    self.position += n as u64;
                    self.partial.extend_from_slice(&buf[..n]);
                    self.take_lines(&mut found);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error()) => {
                    tracing::debug!(path = %self.path.display(), "kernel log overran; some records were not seen");
                }
                Err(e) => {
                    tracing::debug!(path = %self.path.display(), error = %e, "reading the kernel log failed");
                    break;
                }
            }
        }
        found
    }

    fn take_lines(&mut self, found: &mut Vec<(PciAddress, u64)>) {
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.partial[start..start + end]);
            if let Some(xid) = parse_kernel_xid(&line) {
                found.push(xid);
            }
            start += end + 1;
        }
        self.partial.drain(..start);
        // A line longer than any kernel record is garbage; do not grow without bound.
        if self.partial.len() > 64 * 1024 {
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn follows_a_file_from_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kern.log");
        std::fs::write(&path, "NVRM: Xid (PCI:0000:18:00): 13, old event\n").unwrap();
        let mut log = KernelLog::open(&path).unwrap();
        assert!(
            log.poll().is_empty(),
            "events before the agent started are not counted"
        );

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(
            b"unrelated line\nNVRM: Xid (PCI:0000:2a:00): 48, pid=1\nNVRM: Xid (PCI:0000:3a:00)",
        )
        .unwrap();
        file.flush().unwrap();
        assert_eq!(log.poll(), vec![((0, 0x2a, 0), 48)]);
        // The rest of a line written in two parts.
        file.write_all(b": 79, GPU has fallen off the bus.\n")
            .unwrap();
        assert_eq!(log.poll(), vec![((0, 0x3a, 0), 79)]);
    }

    #[test]
    fn restarts_when_the_file_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kern.log");
        std::fs::write(&path, "x".repeat(1000)).unwrap();
        let mut log = KernelLog::open(&path).unwrap();
        std::fs::write(&path, "NVRM: Xid (PCI:0000:18:00): 31, pid=7\n").unwrap();
        assert_eq!(log.poll(), vec![((0, 0x18, 0), 31)]);
    }
}
