//! `gantry bundle push`: uploads a bundle file in chunks, resuming from what the
//! controller already holds, then asks the controller to verify and keep it.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;

use gantry_shared::protocol::delivery::{self, BundleInfo, CHUNK_SIZE};
use sha2::{Digest, Sha256};

use crate::client::{AdminClient, ClientError};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot read the bundle {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Uploads `path` and returns what the controller kept. Shows a progress bar on stderr
/// when it is a terminal.
pub async fn push(client: &AdminClient, path: &Path) -> Result<BundleInfo, PushError> {
    upload(client, path, false).await
}

/// Like [`push`], for a bundle carried in by file to an air-gapped controller: recorded
/// in the audit log as an import.
pub async fn import(client: &AdminClient, path: &Path) -> Result<BundleInfo, PushError> {
    upload(client, path, true).await
}

async fn upload(client: &AdminClient, path: &Path, import: bool) -> Result<BundleInfo, PushError> {
    let read_err = |source| PushError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = gantry_net::files::open_regular(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher).map_err(read_err)?;
    let file_sha256 = format!("{:x}", hasher.finalize());
    let progress = std::io::stderr().is_terminal();
    let upload = |offset: u64, data: &[u8]| {
        client.bundle_upload(file_sha256.clone(), size, offset, delivery::encode(data))
    };
    // An empty chunk asks how much of an earlier, broken push the controller holds.
    let mut received = upload(u64::MAX, &[]).await?;
    if received > 0 && progress {
        eprintln!("resuming at {received} of {size} bytes");
    }
    let mut buf = vec![0u8; CHUNK_SIZE];
    while received < size {
        file.seek(SeekFrom::Start(received)).map_err(read_err)?;
        let n = read_up_to(&mut file, &mut buf).map_err(read_err)?;
        if n == 0 {
            return Err(read_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being pushed",
            )));
        }
        received = upload(received, &buf[..n]).await?;
        if progress {
            draw(received, size);
        }
    }
    if progress {
        eprintln!();
    }
    Ok(client.bundle_commit(file_sha256, import).await?)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn draw(done: u64, total: u64) {
    const WIDTH: u64 = 40;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{bar}] {percent:>3}% {:.1}/{:.1} MiB",
        done as f64 / 1_048_576.0,
        total as f64 / 1_048_576.0
    );
    let _ = err.flush();
}

/// `gantry bundle ls` as a table.
pub fn render_list(bundles: &[BundleInfo]) -> String {
    let mut out = format!(
        "{:<24} {:<10} {:<19} {:>10}  {}\n",
        "NAME", "VERSION", "ID", "SIZE", "ASSIGNED"
    );
    for b in bundles {
        let short = b.id.strip_prefix("sha256:").unwrap_or(&b.id);
        let _ = writeln!(
            out,
            "{:<24} {:<10} sha256:{:<12} {:>10}  {}",
            b.name,
            b.version,
            &short[..short.len().min(12)],
            b.size,
            if b.assigned.is_empty() {
                "-".to_owned()
            } else {
                b.assigned.join(",")
            }
        );
    }
    out
}
