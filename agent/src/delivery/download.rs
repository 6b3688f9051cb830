//! The file a bundle is downloaded into, `<state_dir>/downloads/<file sha256>.partial`.
//!
//! Bytes are appended at the file's end and nowhere else, so the file's length is always
//! how far the transfer got and a broken transfer resumes from it. Where the filesystem
//! allows, whole 4 KiB blocks are written with `O_DIRECT`: a bundle of gigabytes then
//! costs the CPU no copy into the page cache (on a loaded two-core node that copy is most
//! of what a transfer costs beyond the network) and leaves the cache to the models.
//! Whatever cannot go direct — the file's last bytes, a filesystem without `O_DIRECT`
//! such as tmpfs, an unaligned buffer — is written through the page cache instead.
//! Direct writes need the file offset aligned too, so on opening, a length that is not a
//! multiple of [`ALIGN`] is cut back to one: a resumed transfer fetches those few bytes
//! again.

#![allow(clippy::disallowed_methods)] // runs on blocking threads only (the writer, spawn_blocking)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Block size that direct writes keep their buffers, lengths and offsets aligned to.
pub(super) const ALIGN: usize = 4096;

/// An open download, appended to in order.
#[derive(Debug)]
pub(super) struct Download {
    /// The same file opened with `O_DIRECT`, while direct writes work.
    direct: Option<File>,
    buffered: File,
    len: u64,
}

impl Download {
    /// Opens (or creates) the download at `path`, ready to append at its aligned length.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let buffered = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        let len = buffered.metadata()?.len();
        let aligned = len - len % ALIGN as u64;
        if aligned != len {
            buffered.set_len(aligned)?;
        }
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits().cast_signed())
            .open(path)
            .ok();
        Ok(Self {
            direct,
            buffered,
            len: aligned,
        })
    }

    /// Bytes in the file: where the transfer resumes.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `data`.
    pub(super) fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        let whole_blocks = data.len() - data.len() % ALIGN;
        if let Some(direct) = &self.direct
            && whole_blocks > 0
            && data.as_ptr().align_offset(ALIGN) == 0
            && self.len.is_multiple_of(ALIGN as u64)
        {
            match direct.write_all_at(&data[..whole_blocks], self.len) {
                Ok(()) => {
                    self.len += whole_blocks as u64;
                    data = &data[whole_blocks..];
                }
                // The filesystem refuses direct writes after all: buffered from now on.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    tracing::debug!(error = %e, "direct writes refused; writing through the page cache");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Makes everything appended durable.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.buffered.sync_all()
    }
}

/// A buffer the network fills and the writer drains, with a block-aligned window so the
/// writer can write it directly. Buffers go back and forth between the two instead of
/// being allocated per piece.
#[derive(Debug)]
pub(super) struct Piece {
    buf: Vec<u8>,
    start: usize,
    capacity: usize,
    filled: usize,
}

impl Piece {
    /// An empty piece holding up to `capacity` bytes.
    pub(super) fn new(capacity: usize) -> Self {
        let buf = vec![0u8; capacity + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self {
            buf,
            start,
            capacity,
            filled: 0,
        }
    }

    /// The bytes filled so far.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.filled]
    }

    /// Room still free.
    pub(super) fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.start + self.filled..self.start + self.capacity]
    }

    pub(super) fn advance(&mut self, n: usize) {
        self.filled += n;
    }

    pub(super) fn filled(&self) -> usize {
        self.filled
    }

    pub(super) fn is_full(&self) -> bool {
        self.filled == self.capacity
    }

    /// Empties the piece for reuse.
    pub(super) fn clear(&mut self) {
        self.filled = 0;
    }
}

/// Makes the downloads directory and removes partial downloads of bundles no longer
/// assigned, so a node reassigned again and again holds at most one.
pub(super) fn prepare(dir: &Path, keep_sha256: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let keep = format!("{keep_sha256}.partial");
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_name().to_str() == Some(keep.as_str()) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::info!(path = %entry.path().display(), "removed the download of a bundle no longer assigned");
            }
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an old download");
            }
        }
    }
    Ok(())
}

/// Removes a download that must not be resumed.
pub(super) fn discard(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn appends_land_in_order_whatever_their_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.partial");
        let mut d = Download::open(&path).unwrap();
        let mut expected = Vec::new();
        let mut piece = Piece::new(3 * ALIGN);
        for (len, seed) in [(3 * ALIGN, 1), (ALIGN + 17, 2), (5, 3), (2 * ALIGN, 4)] {
            piece.clear();
            let data = pattern(len.min(3 * ALIGN), seed);
            piece.space()[..data.len()].copy_from_slice(&data);
            piece.advance(data.len());
            d.append(piece.bytes()).unwrap();
            expected.extend_from_slice(&data);
        }
        d.sync().unwrap();
        assert_eq!(d.len(), expected.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn reopening_cuts_an_unaligned_length_back_to_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.partial");
        std::fs::write(&path, pattern(2 * ALIGN + 100, 7)).unwrap();
        let mut d = Download::open(&path).unwrap();
        assert_eq!(d.len(), 2 * ALIGN as u64);
        d.append(b"tail").unwrap();
        let mut expected = pattern(2 * ALIGN, 7);
        expected.extend_from_slice(b"tail");
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    #[test]
    fn pieces_are_block_aligned() {
        let mut piece = Piece::new(ALIGN);
        assert_eq!(piece.space().as_ptr().align_offset(ALIGN), 0);
        assert_eq!(piece.space().len(), ALIGN);
        piece.advance(ALIGN);
        assert!(piece.is_full());
    }
}
