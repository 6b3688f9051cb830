//! The controller's bundle repository under `<home>/bundles`: uploads in progress
//! (`.upload-<sha256>`), verified bundles (`<id hex>.gbundle` with `<id hex>.json`
//! beside it), and which node should run which bundle (`assignments.json`).
//!
//! A bundle is kept only after it passes the controller's own trust policy
//! (`<home>/trust.json`); agents verify it again against theirs.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use gantry_shared::protocol::delivery::{BundleInfo, CHUNK_SIZE, Desired};
use sha2::{Digest, Sha256};

use crate::atomic_file::write_atomically;

/// The largest bundle the controller accepts.
pub const MAX_BUNDLE_SIZE: u64 = 64 << 30;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the bundle was refused: {0}")]
    Refused(String),
    #[error("the bundle repository {path} cannot be used: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Bundle ids and file digests name files here, so only 64 lowercase hex digits pass.
fn check_hex(what: &str, value: &str) -> Result<(), RepoError> {
    if value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(RepoError::BadRequest(format!(
            "{what} {value:?} is not 64 lowercase hex digits"
        )))
    }
}

fn id_hex(id: &str) -> Result<&str, RepoError> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    check_hex("bundle id", hex)?;
    Ok(hex)
}

/// See the module documentation.
#[derive(Debug)]
pub struct BundleRepo {
    dir: PathBuf,
    trust: PathBuf,
    /// Node name → bundle id; guards `assignments.json` too.
    assignments: Mutex<BTreeMap<String, String>>,
}

impl BundleRepo {
    /// Opens (creating) the repository in `dir`; `trust` is the controller's policy.
    pub fn open(dir: PathBuf, trust: PathBuf) -> Result<Self, RepoError> {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join("assignments.json");
        let assignments = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RepoError::Io {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(RepoError::Io { path, source }),
        };
        Ok(Self {
            dir,
            trust,
            assignments: Mutex::new(assignments),
        })
    }

    fn upload_path(&self, file_sha256: &str) -> PathBuf {
        self.dir.join(format!(".upload-{file_sha256}"))
    }

    fn bundle_path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.gbundle"))
    }

    fn info_path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.json"))
    }

    /// Appends `data` at `offset` of the upload; returns the bytes held. A chunk that does
    /// not start where the upload ends writes nothing: the caller resumes from the answer.
    pub fn upload(
        &self,
        file_sha256: &str,
        size: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, RepoError> {
        check_hex("file digest", file_sha256)?;
        if size > MAX_BUNDLE_SIZE {
            return Err(RepoError::BadRequest(format!(
                "a {size}-byte bundle is larger than the {MAX_BUNDLE_SIZE}-byte limit"
            )));
        }
        let path = self.upload_path(file_sha256);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let held = file.metadata().map_err(io_err(&path))?.len();
        if offset != held || data.is_empty() {
            return Ok(held);
        }
        if held + data.len() as u64 > size {
            return Err(RepoError::BadRequest(format!(
                "the upload would exceed its announced size of {size} bytes"
            )));
        }
        file.write_all(data).map_err(io_err(&path))?;
        Ok(held + data.len() as u64)
    }

    /// Checks the finished upload's digest, verifies it against the trust policy and
    /// keeps it. Pushing a bundle already held answers with what is held.
    pub fn commit(
        &self,
        file_sha256: &str,
        pushed_by: &str,
        now: SystemTime,
    ) -> Result<BundleInfo, RepoError> {
        check_hex("file digest", file_sha256)?;
        let upload = self.upload_path(file_sha256);
        let mut file = File::open(&upload).map_err(|_| {
            RepoError::NotFound(format!(
                "no upload with digest {file_sha256} is in progress"
            ))
        })?;
        let mut hasher = Sha256::new();
        let size = io::copy(&mut file, &mut hasher).map_err(io_err(&upload))?;
        let actual = format!("{:x}", hasher.finalize());
        if actual != file_sha256 {
            fs::remove_file(&upload).map_err(io_err(&upload))?;
            return Err(RepoError::Refused(format!(
                "the uploaded bytes hash to {actual}, not {file_sha256}; the upload was discarded, push again"
            )));
        }
        let outcome = crate::bundle_cmd::verify(&upload, &self.trust, now)
            .map_err(|e| RepoError::Refused(format!("{e}: {}", error_chain(&e))))?;
        let (true, Some(id)) = (outcome.ok, outcome.id.clone()) else {
            fs::remove_file(&upload).map_err(io_err(&upload))?;
            return Err(RepoError::Refused(format!(
                "it does not pass the controller's trust policy {}:\n{}",
                self.trust.display(),
                outcome.render_text()
            )));
        };
        let hex = id_hex(&id)?.to_owned();
        let info = BundleInfo {
            id: id.clone(),
            name: outcome.name.unwrap_or_default(),
            version: outcome.version.unwrap_or_default(),
            file_sha256: file_sha256.to_owned(),
            size,
            pushed_at_ms: crate::now_ms(),
            pushed_by: pushed_by.to_owned(),
            assigned: Vec::new(),
        };
        if let Ok(existing) = self.info(&hex) {
            fs::remove_file(&upload).map_err(io_err(&upload))?;
            return Ok(existing);
        }
        let target = self.bundle_path(&hex);
        fs::rename(&upload, &target).map_err(io_err(&target))?;
        let info_path = self.info_path(&hex);
        write_atomically(&info_path, 0o644, |w| {
            serde_json::to_writer_pretty(&mut *w, &info).map_err(io::Error::other)
        })
        .map_err(io_err(&info_path))?;
        Ok(info)
    }

    fn info(&self, hex: &str) -> Result<BundleInfo, RepoError> {
        let path = self.info_path(hex);
        let bytes = fs::read(&path)
            .map_err(|_| RepoError::NotFound(format!("no bundle sha256:{hex} is held")))?;
        let mut info: BundleInfo = serde_json::from_slice(&bytes).map_err(|e| RepoError::Io {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        let id = format!("sha256:{hex}");
        info.assigned = self
            .assignments
            .lock()
            .expect("assignments")
            .iter()
            .filter(|(_, assigned)| **assigned == id)
            .map(|(node, _)| node.clone())
            .collect();
        Ok(info)
    }

    /// Every bundle held, oldest push first.
    pub fn list(&self) -> Result<Vec<BundleInfo>, RepoError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".gbundle")) else {
                continue;
            };
            if check_hex("bundle id", hex).is_ok() {
                out.push(self.info(hex)?);
            }
        }
        out.sort_by_key(|b| b.pushed_at_ms);
        Ok(out)
    }

    /// Makes `id` the desired bundle of `nodes` (persisted before it answers).
    pub fn assign(&self, id: &str, nodes: &[String]) -> Result<String, RepoError> {
        let hex = id_hex(id)?.to_owned();
        self.info(&hex)?;
        let id = format!("sha256:{hex}");
        let mut assignments = self.assignments.lock().expect("assignments");
        let mut next = assignments.clone();
        for node in nodes {
            next.insert(node.clone(), id.clone());
        }
        let path = self.dir.join("assignments.json");
        write_atomically(&path, 0o644, |w| {
            serde_json::to_writer_pretty(&mut *w, &next).map_err(io::Error::other)
        })
        .map_err(io_err(&path))?;
        *assignments = next;
        Ok(id)
    }

    /// What `node` should run.
    pub fn desired(&self, node: &str) -> Option<Desired> {
        let id = self
            .assignments
            .lock()
            .expect("assignments")
            .get(node)?
            .clone();
        let info = self.info(id_hex(&id).ok()?).ok()?;
        Some(Desired {
            id,
            file_sha256: info.file_sha256,
            size: info.size,
        })
    }

    /// Bytes `offset..offset+len` of bundle `id`, for a node it is assigned to.
    pub fn chunk(&self, node: &str, id: &str, offset: u64, len: u32) -> Result<Vec<u8>, RepoError> {
        let hex = id_hex(id)?;
        let assigned = self
            .assignments
            .lock()
            .expect("assignments")
            .get(node)
            .cloned();
        if assigned.as_deref() != Some(&format!("sha256:{hex}")) {
            return Err(RepoError::NotFound(format!(
                "bundle {id} is not assigned to node {node}"
            )));
        }
        let path = self.bundle_path(hex);
        let mut file = File::open(&path).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
        let mut out = Vec::with_capacity((len as usize).min(CHUNK_SIZE));
        file.take(u64::from(len).min(CHUNK_SIZE as u64))
            .read_to_end(&mut out)
            .map_err(io_err(&path))?;
        Ok(out)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out.join(": ")
}
