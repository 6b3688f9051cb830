//! The strict subset of POSIX ustar that bundles use, read and written over any
//! `Read`/`Write` (no file system access here).
//!
//! A bundle is a tar file so operators can look into it with `tar -tvf`, but the reader
//! accepts only what the writer produces: ustar headers (magic `ustar\0`, version `00`)
//! with a valid checksum, regular files only (type `0`), paths of at most 255 bytes in
//! `prefix/name` form, sizes in octal. Everything else — hard and symbolic links,
//! device files, FIFOs, directories, pax and GNU extension headers — is refused by type,
//! before its contents are read. The archive ends with two zero blocks and nothing after
//! them: a byte past the end is trailing garbage, a missing end is truncation.
//!
//! The reader also insists on the writer's exact form: every header byte-for-byte as the
//! writer would build it for that path and size (mode, owner, mtime zero), and zero
//! padding. So no byte of a bundle escapes verification: headers are functions of the
//! signed manifest's paths and sizes, contents are covered by its digests, and a changed
//! mtime or a message hidden in padding is refused like any other alteration.

use std::io::{self, Read, Write};

/// Size of a tar block.
pub const BLOCK: usize = 512;

/// Why an archive was refused. Entry paths are quoted as found (lossy UTF-8).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("the bundle is truncated: it ends {context}")]
    Truncated { context: &'static str },
    #[error("header block {block} is not a ustar header ({reason})")]
    BadHeader { block: u64, reason: &'static str },
    #[error("entry {path:?} is a {kind}; bundles hold regular files only")]
    NotARegularFile { path: String, kind: &'static str },
    #[error("block {block} has non-zero bytes in the padding after a file's contents")]
    NonZeroPadding { block: u64 },
    #[error("the bundle has trailing data after its end-of-archive marker")]
    TrailingGarbage,
    #[error("reading the bundle failed")]
    Io(#[source] io::Error),
}

/// One entry's header, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    pub path: String,
    pub size: u64,
}

/// Reads entries of a strict ustar archive in order.
#[derive(Debug)]
pub struct ArchiveReader<R> {
    inner: R,
    /// Bytes of the current entry not yet read, then its padding.
    remaining: u64,
    padding: u64,
    blocks_read: u64,
    finished: bool,
}

fn read_exact_or_truncated<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    context: &'static str,
) -> Result<(), ArchiveError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(ArchiveError::Truncated { context })
        }
        Err(e) => Err(ArchiveError::Io(e)),
    }
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = field
        .split(|&b| b == 0 || b == b' ')
        .find(|s| !s.is_empty())
        .unwrap_or(b"0");
    if text.len() > 12 || !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    u64::from_str_radix(text, 8).ok()
}

fn c_string(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn type_name(flag: u8) -> &'static str {
    match flag {
        b'1' => "hard link",
        b'2' => "symbolic link",
        b'3' => "character device",
        b'4' => "block device",
        b'5' => "directory",
        b'6' => "FIFO",
        b'7' => "contiguous file",
        b'x' | b'g' => "pax extended header",
        b'L' | b'K' => "GNU long-name header",
        _ => "entry of unknown type",
    }
}

impl<R: Read> ArchiveReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            blocks_read: 0,
            finished: false,
        }
    }

    /// Moves to the next entry, skipping what is left of the current one. `None` at the
    /// end-of-archive marker (after which [`Self::finish`] checks nothing follows).
    pub fn next_entry(&mut self) -> Result<Option<EntryHeader>, ArchiveError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_rest()?;
        let mut block = [0u8; BLOCK];
        read_exact_or_truncated(
            &mut self.inner,
            &mut block,
            "before the end-of-archive marker",
        )?;
        let block_no = self.blocks_read;
        self.blocks_read += 1;
        if block.iter().all(|&b| b == 0) {
            let mut second = [0u8; BLOCK];
            read_exact_or_truncated(
                &mut self.inner,
                &mut second,
                "inside the end-of-archive marker",
            )?;
            self.blocks_read += 1;
            if !second.iter().all(|&b| b == 0) {
                return Err(ArchiveError::BadHeader {
                    block: block_no,
                    reason: "a zero block not followed by another",
                });
            }
            self.finished = true;
            return Ok(None);
        }
        let header = parse_header(&block, block_no)?;
        if build_header(&header.path, header.size).ok() != Some(block) {
            return Err(ArchiveError::BadHeader {
                block: block_no,
                reason: "not in the form bundles are written in: mode, owner, time or layout altered",
            });
        }
        self.blocks_read += header.size.div_ceil(BLOCK as u64);
        self.remaining = header.size;
        self.padding = (BLOCK as u64 - header.size % BLOCK as u64) % BLOCK as u64;
        Ok(Some(header))
    }

    /// Reads from the current entry; 0 at its end.
    pub fn read_entry(&mut self, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::Io(e)),
            }
        };
        if n == 0 {
            return Err(ArchiveError::Truncated {
                context: "inside a file's contents",
            });
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    fn skip_rest(&mut self) -> Result<(), ArchiveError> {
        let mut scratch = [0u8; 8192];
        while self.remaining > 0 {
            self.read_entry(&mut scratch)?;
        }
        while self.padding > 0 {
            let n = usize::try_from(self.padding)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            read_exact_or_truncated(
                &mut self.inner,
                &mut scratch[..n],
                "inside a file's padding",
            )?;
            if scratch[..n].iter().any(|&b| b != 0) {
                return Err(ArchiveError::NonZeroPadding {
                    block: self.blocks_read - 1,
                });
            }
            self.padding -= n as u64;
        }
        Ok(())
    }

    /// After the end-of-archive marker: refuses any further byte.
    pub fn finish(mut self) -> Result<(), ArchiveError> {
        if !self.finished {
            return Err(ArchiveError::Truncated {
                context: "before the end-of-archive marker",
            });
        }
        let mut byte = [0u8; 1];
        loop {
            match self.inner.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(ArchiveError::TrailingGarbage),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::Io(e)),
            }
        }
    }
}

fn parse_header(block: &[u8; BLOCK], block_no: u64) -> Result<EntryHeader, ArchiveError> {
    let bad = |reason| ArchiveError::BadHeader {
        block: block_no,
        reason,
    };
    if &block[257..263] != b"ustar\0" || &block[263..265] != b"00" {
        return Err(bad("missing ustar magic"));
    }
    let stored = parse_octal(&block[148..156]).ok_or_else(|| bad("unreadable checksum"))?;
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != computed {
        return Err(bad("checksum mismatch"));
    }
    let name = c_string(&block[0..100]);
    let prefix = c_string(&block[345..500]);
    let path_bytes = if prefix.is_empty() {
        name.to_vec()
    } else {
        [prefix, b"/", name].concat()
    };
    let path = String::from_utf8(path_bytes).map_err(|_| bad("path is not UTF-8"))?;
    let flag = block[156];
    if flag != b'0' && flag != 0 {
        return Err(ArchiveError::NotARegularFile {
            path,
            kind: type_name(flag),
        });
    }
    let size = parse_octal(&block[124..136]).ok_or_else(|| bad("unreadable size"))?;
    Ok(EntryHeader { path, size })
}

/// Writes a strict ustar archive.
#[derive(Debug)]
pub struct ArchiveWriter<W> {
    inner: W,
}

/// A path that does not fit a ustar header.
#[derive(Debug, thiserror::Error)]
#[error("path {path:?} cannot be stored in a bundle: {reason}")]
pub struct PathTooLong {
    pub path: String,
    pub reason: &'static str,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    /// Writes one regular file: header, `size` bytes copied from `contents`, padding.
    pub fn append(&mut self, path: &str, size: u64, contents: &mut dyn Read) -> io::Result<()> {
        self.start_file(path, size)?;
        let copied = io::copy(&mut contents.take(size), &mut self.inner)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes, got {copied}"),
            ));
        }
        self.end_file(size)
    }

    /// Starts a regular file of `size` bytes; its contents follow through
    /// [`Self::write_contents`] and it ends with [`Self::end_file`].
    pub fn start_file(&mut self, path: &str, size: u64) -> io::Result<()> {
        let header =
            build_header(path, size).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.inner.write_all(&header)
    }

    pub fn write_contents(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.write_all(data)
    }

    /// Pads the file of `size` bytes to a whole block.
    pub fn end_file(&mut self, size: u64) -> io::Result<()> {
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.inner.write_all(&[0u8; BLOCK][..padding as usize])
    }

    /// Writes the end-of-archive marker and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(&[0u8; 2 * BLOCK])?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

fn build_header(path: &str, size: u64) -> Result<[u8; BLOCK], PathTooLong> {
    let too_long = |reason| PathTooLong {
        path: path.to_owned(),
        reason,
    };
    let bytes = path.as_bytes();
    let (prefix, name) = if bytes.len() <= 100 {
        (&[][..], bytes)
    } else {
        // Split at a '/' so that the prefix fits 155 bytes and the name 100.
        let split = (0..bytes.len())
            .rev()
            .filter(|&i| bytes[i] == b'/')
            .find(|&i| i <= 155 && bytes.len() - i - 1 <= 100)
            .ok_or_else(|| too_long("longer than ustar allows (255 bytes, name part 100)"))?;
        (&bytes[..split], &bytes[split + 1..])
    };
    if size >= 8u64.pow(11) {
        return Err(too_long("file larger than 8 GiB"));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[345..345 + prefix.len()].copy_from_slice(prefix);
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// Test helpers that build hostile archives the writer refuses to produce.
#[doc(hidden)]
pub mod hostile {
    use super::{BLOCK, build_header};

    /// A header for `path` with type flag `flag` (e.g. `b'2'` for a symlink).
    pub fn header(path: &str, size: u64, flag: u8) -> [u8; BLOCK] {
        let mut h = build_header(path, size).expect("short path");
        h[156] = flag;
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = ArchiveWriter::new(Vec::new());
        for (path, data) in entries {
            w.append(path, data.len() as u64, &mut &data[..]).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
        let mut r = ArchiveReader::new(bytes);
        let mut out = Vec::new();
        while let Some(h) = r.next_entry()? {
            let mut data = Vec::new();
            let mut buf = [0u8; 100];
            loop {
                let n = r.read_entry(&mut buf)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            assert_eq!(data.len() as u64, h.size);
            out.push((h.path, data));
        }
        r.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trip_including_long_paths() {
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(90));
        let bytes = archive(&[("a.txt", b"hello"), (&long, b""), ("b", &[7u8; 1300])]);
        let entries = read_all(&bytes).unwrap();
        assert_eq!(entries[0], ("a.txt".to_owned(), b"hello".to_vec()));
        assert_eq!(entries[1].0, long);
        assert_eq!(entries[2].1.len(), 1300);
    }

    #[test]
    fn writer_emits_plain_ustar_blocks() {
        let bytes = archive(&[("manifest.json", b"{}")]);
        assert_eq!(&bytes[257..263], b"ustar\0");
        assert_eq!(bytes.len(), 4 * BLOCK);
    }

    #[test]
    fn symlink_is_refused_by_type() {
        let mut bytes = hostile::header("evil", 0, b'2').to_vec();
        bytes.extend_from_slice(&[0u8; 2 * BLOCK]);
        let err = read_all(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::NotARegularFile {
                    kind: "symbolic link",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = archive(&[("a", &[1u8; 2000])]);
        for cut in [100, BLOCK + 10, 3 * BLOCK, bytes.len() - 1] {
            let err = read_all(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, ArchiveError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn trailing_garbage_is_detected() {
        let mut bytes = archive(&[("a", b"x")]);
        bytes.push(0);
        assert!(matches!(
            read_all(&bytes).unwrap_err(),
            ArchiveError::TrailingGarbage
        ));
    }

    #[test]
    fn corrupted_header_checksum_is_detected() {
        let mut bytes = archive(&[("a", b"x")]);
        bytes[0] = b'b';
        assert!(matches!(
            read_all(&bytes).unwrap_err(),
            ArchiveError::BadHeader {
                reason: "checksum mismatch",
                ..
            }
        ));
    }

    /// Recomputes a header's checksum after an edit, as a careful forger would.
    fn reseal(header: &mut [u8]) {
        header[148..156].copy_from_slice(b"        ");
        let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    #[test]
    fn header_with_altered_mtime_and_valid_checksum_is_refused() {
        let mut bytes = archive(&[("a", b"x"), ("b", b"y")]);
        let second = 2 * BLOCK;
        bytes[second + 136..second + 147].copy_from_slice(b"14712345670");
        reseal(&mut bytes[second..second + BLOCK]);
        let err = read_all(&bytes).unwrap_err();
        assert!(
            matches!(err, ArchiveError::BadHeader { block: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("time"), "{err}");
    }

    #[test]
    fn header_with_altered_owner_or_mode_is_refused() {
        for field in [100..107, 108..115, 265..270] {
            let mut bytes = archive(&[("a", b"x")]);
            bytes[field.clone()].copy_from_slice(&b"0000777"[..field.len()]);
            reseal(&mut bytes[..BLOCK]);
            assert!(
                matches!(read_all(&bytes), Err(ArchiveError::BadHeader { .. })),
                "field {field:?} altered unnoticed"
            );
        }
    }

    #[test]
    fn data_hidden_in_padding_is_refused() {
        let mut bytes = archive(&[("a", b"x"), ("b", b"y")]);
        bytes[BLOCK + 300] = b'!';
        let err = read_all(&bytes).unwrap_err();
        assert!(
            matches!(err, ArchiveError::NonZeroPadding { block: 1 }),
            "{err}"
        );
        // In the last file's padding too.
        let mut bytes = archive(&[("a", b"x")]);
        bytes[BLOCK + 511] = 1;
        assert!(matches!(
            read_all(&bytes),
            Err(ArchiveError::NonZeroPadding { .. })
        ));
    }
}
