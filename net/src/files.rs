//! Files operators hand to a command (bundles, policy updates): read from regular files
//! only. A FIFO or a device can answer two reads differently, and opening a FIFO that
//! has no writer blocks forever; both are refused before a byte is read.

use std::fs::File;
use std::io;
use std::path::Path;

/// Opens `path` for reading if it is a regular file. It is opened non-blocking, so a
/// FIFO without a writer is refused at once instead of hanging the command; the error
/// (`InvalidInput`) says what the path is instead.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits().cast_signed())
        .open(path)?;
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() {
        return Ok(file);
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is {what}, not a regular file; copy it into a file and use that",
            path.display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_without_a_writer_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("bundle.fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            0,
        )
        .unwrap();
        let err = open_regular(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("is a FIFO, not a regular file"),
            "{err}"
        );
        let dir_err = open_regular(dir.path()).unwrap_err();
        assert!(dir_err.to_string().contains("is a directory"), "{dir_err}");
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        assert!(open_regular(&dir.path().join("f")).is_ok());
    }
}
