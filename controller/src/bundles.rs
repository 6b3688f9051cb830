//! The controller's bundle repository: the files under `<home>/bundles` — uploads in
//! progress (`.upload-<sha256>`) and verified bundles (`<id hex>.gbundle`) — and, in the
//! controller's store, what is recorded of each bundle and which node should run which
//! (changed with the rollout that makes an assignment and its audit entries in one
//! transaction). An older controller's `assignments.json` and `<id hex>.json` files are
//! taken into the store when the repository opens, then removed.
//!
//! A bundle is kept only after it passes the controller's own trust policy
//! (`<home>/trust.json`); agents verify it again against theirs.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use gantry_shared::bundle::outcome::error_chain;
use gantry_shared::protocol::delivery::{self, BundleInfo, Desired};
use sha2::{Digest, Sha256};

use gantry_net::trust;

use crate::store::{Assignment, Assignments, Store, StoreError};

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
    #[error("the bundle repository {path} cannot be used")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the bundle records cannot be used")]
    Store(#[from] StoreError),
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Bundle ids and file digests name files here, so only 64 lowercase hex digits pass.
fn check_hex(what: &str, value: &str) -> Result<(), RepoError> {
    if delivery::is_sha256_hex(value) {
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
    store: Arc<Store>,
    /// (Node, model) → bundle id, as the store holds it; the lock serialises changes.
    assignments: Mutex<Assignments>,
    /// What heartbeats answer per bundle id; bundles are immutable, so this never goes
    /// stale.
    desired: Mutex<std::collections::HashMap<String, Desired>>,
    /// Reference profiles read from held bundles, by bundle id (immutable, like `desired`):
    /// reading one streams the whole bundle file, so it is done once per bundle.
    reference_profiles:
        Mutex<std::collections::HashMap<String, Arc<gantry_shared::monitoring::profile::Profile>>>,
}

impl BundleRepo {
    /// Opens (creating) the repository in `dir`; `trust` is the controller's policy,
    /// `store` where its records live.
    pub fn open(dir: PathBuf, trust: PathBuf, store: Arc<Store>) -> Result<Self, RepoError> {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        take_in_files(&dir, &store)?;
        let assignments = store.assignments()?;
        Ok(Self {
            dir,
            trust,
            store,
            assignments: Mutex::new(assignments),
            desired: Mutex::default(),
            reference_profiles: Mutex::default(),
        })
    }

    /// The controller's trust policy that pushes are verified against.
    pub fn trust_path(&self) -> PathBuf {
        self.trust.clone()
    }

    fn upload_path(&self, file_sha256: &str) -> PathBuf {
        self.dir.join(format!(".upload-{file_sha256}"))
    }

    fn bundle_path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.gbundle"))
    }

    /// The reference profile of bundle `id`, when the controller holds the bundle and it
    /// has one (its digest checked against the manifest). Blocking: reads the file once.
    pub fn reference_profile(
        &self,
        id: &str,
    ) -> Option<Arc<gantry_shared::monitoring::profile::Profile>> {
        if let Some(profile) = self.reference_profiles.lock().expect("profiles").get(id) {
            return Some(Arc::clone(profile));
        }
        let path = self.file_of(id)?;
        let profile = match crate::bundle_cmd::inspect(&path) {
            Ok(inspection) => Arc::new(inspection.reference_profile?),
            Err(e) => {
                tracing::warn!(bundle = id, error = %e, "cannot read the reference profile of a held bundle");
                return None;
            }
        };
        self.reference_profiles
            .lock()
            .expect("profiles")
            .insert(id.to_owned(), Arc::clone(&profile));
        Some(profile)
    }

    /// The file of bundle `id` (`sha256:<hex>`), when the controller holds it.
    fn file_of(&self, id: &str) -> Option<PathBuf> {
        let hex = id.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.bundle_path(hex)).filter(|p| p.is_file())
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
        let outcome = trust::load_policy(&self.trust, trust::Owner::Controller)
            .and_then(|policy| trust::verify_file(&upload, &policy, now))
            .map_err(|e| RepoError::Refused(error_chain(&e)))?;
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
            pushed_at_ms: gantry_net::clock::now_ms(),
            pushed_by: pushed_by.to_owned(),
            assigned: Vec::new(),
            signers: outcome
                .signatures
                .iter()
                .filter(|s| s.valid)
                .map(|s| match &s.key_name {
                    Some(name) => format!("{name} ({})", s.key_id),
                    None => s.key_id.clone(),
                })
                .collect(),
            policy_sha256: fs::read(&self.trust)
                .map(|bytes| format!("{:x}", Sha256::digest(&bytes)))
                .unwrap_or_default(),
        };
        if let Ok(existing) = self.info(&hex) {
            fs::remove_file(&upload).map_err(io_err(&upload))?;
            return Ok(existing);
        }
        // The file first: a record never names a bundle that is not there. A crash
        // between leaves a file without a record, which the next push of it completes.
        let target = self.bundle_path(&hex);
        fs::rename(&upload, &target).map_err(io_err(&target))?;
        Ok(self.store.put_bundle_info(&hex, &info)?)
    }

    fn info(&self, hex: &str) -> Result<BundleInfo, RepoError> {
        let mut info = self
            .store
            .bundle_info(hex)?
            .filter(|_| self.bundle_path(hex).is_file())
            .ok_or_else(|| RepoError::NotFound(format!("no bundle sha256:{hex} is held")))?;
        self.fill_assigned(&mut info);
        Ok(info)
    }

    fn fill_assigned(&self, info: &mut BundleInfo) {
        info.assigned = self
            .assignments
            .lock()
            .expect("assignments")
            .iter()
            .filter(|(_, assigned)| **assigned == info.id)
            .map(|((node, _), _)| node.clone())
            .collect();
    }

    /// Every bundle held, oldest push first.
    pub fn list(&self) -> Result<Vec<BundleInfo>, RepoError> {
        let mut out = self.store.bundle_infos()?;
        out.retain(|b| id_hex(&b.id).is_ok_and(|hex| self.bundle_path(hex).is_file()));
        for info in &mut out {
            self.fill_assigned(info);
        }
        out.sort_by_key(|b| b.pushed_at_ms);
        Ok(out)
    }

    /// Makes `id` the desired bundle of `nodes` for its model (the bundle's name; their
    /// other models are left as they are), with the audit entries `audit` makes of the
    /// bundle recorded in the same transaction (persisted before it answers).
    pub fn assign(
        &self,
        id: &str,
        nodes: &[String],
        audit: impl FnOnce(&BundleInfo) -> Vec<gantry_shared::audit::NewEntry>,
    ) -> Result<BundleInfo, RepoError> {
        let hex = id_hex(id)?.to_owned();
        let info = self.info(&hex)?;
        let changes: Vec<Assignment> = nodes
            .iter()
            .map(|node| Assignment {
                node: node.clone(),
                model: info.name.clone(),
                bundle: Some(info.id.clone()),
            })
            .collect();
        self.commit_assignments(&changes, None, audit(&info))?;
        self.info(&hex)
    }

    /// Applies assignment `changes`, with the rollout that makes them and their audit
    /// entries, in one store transaction; the repository's view follows once it
    /// committed. A bundle named must be held.
    pub fn commit_assignments(
        &self,
        changes: &[Assignment],
        rollout: Option<(u64, &gantry_shared::protocol::rollout::Rollout)>,
        audit: Vec<gantry_shared::audit::NewEntry>,
    ) -> Result<(), RepoError> {
        for bundle in changes.iter().filter_map(|c| c.bundle.as_deref()) {
            self.info(id_hex(bundle)?)?;
        }
        let mut assignments = self.assignments.lock().expect("assignments");
        self.store.commit_assignments(changes, rollout, audit)?;
        for change in changes {
            let key = (change.node.clone(), change.model.clone());
            match &change.bundle {
                Some(id) => assignments.insert(key, id.clone()),
                None => assignments.remove(&key),
            };
        }
        Ok(())
    }

    /// The controller's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The bundle id assigned to `node` for `model`.
    pub fn assigned(&self, node: &str, model: &str) -> Option<String> {
        self.assignments
            .lock()
            .expect("assignments")
            .get(&(node.to_owned(), model.to_owned()))
            .cloned()
    }

    /// The bundle ids assigned to `node`, by model.
    fn assigned_to(&self, node: &str) -> Vec<(String, String)> {
        self.assignments
            .lock()
            .expect("assignments")
            .range((node.to_owned(), String::new())..)
            .take_while(|((n, _), _)| n == node)
            .map(|((_, model), id)| (model.clone(), id.clone()))
            .collect()
    }

    /// The bundle a rollout names: an id (`sha256:…`), or `NAME@VERSION` (the latest
    /// pushed when several bundles carry it).
    pub fn find(&self, reference: &str) -> Result<BundleInfo, RepoError> {
        if reference.starts_with("sha256:") {
            return self.info(id_hex(reference)?);
        }
        let Some((name, version)) = reference.split_once('@') else {
            return Err(RepoError::BadRequest(format!(
                "{reference:?} names no bundle: write NAME@VERSION or sha256:<id>"
            )));
        };
        self.list()?
            .into_iter()
            .rev()
            .find(|b| b.name == name && b.version == version)
            .ok_or_else(|| {
                RepoError::NotFound(format!(
                    "no bundle {name}@{version} is held; push it first (`gantry bundle ls` lists them)"
                ))
            })
    }

    /// What `node` should run: one bundle per model assigned to it, by model name.
    /// (Each bundle's `model` is its name, which its assignment is keyed by.)
    pub fn desired(&self, node: &str) -> Vec<Desired> {
        self.assigned_to(node)
            .into_iter()
            .filter_map(|(_, id)| self.desired_bundle(&id))
            .collect()
    }

    fn desired_bundle(&self, id: &str) -> Option<Desired> {
        if let Some(desired) = self.desired.lock().expect("desired cache").get(id) {
            return Some(desired.clone());
        }
        let info = self.info(id_hex(id).ok()?).ok()?;
        let desired = Desired {
            id: id.to_owned(),
            file_sha256: info.file_sha256,
            size: info.size,
            model: info.name,
        };
        self.desired
            .lock()
            .expect("desired cache")
            .insert(id.to_owned(), desired.clone());
        Some(desired)
    }

    /// Bundle `id` opened for a node it is assigned to, positioned at `offset`, with the
    /// file's size.
    pub fn open_for_node(
        &self,
        node: &str,
        id: &str,
        offset: u64,
    ) -> Result<(File, u64), RepoError> {
        let hex = id_hex(id)?;
        let want = format!("sha256:{hex}");
        if !self.assigned_to(node).iter().any(|(_, id)| *id == want) {
            return Err(RepoError::NotFound(format!(
                "bundle {id} is not assigned to node {node}"
            )));
        }
        let path = self.bundle_path(hex);
        let mut file = File::open(&path).map_err(io_err(&path))?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        if offset > size {
            return Err(RepoError::BadRequest(format!(
                "offset {offset} is beyond the end of bundle {id} ({size} bytes)"
            )));
        }
        file.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
        Ok((file, size))
    }
}

/// Moves an older controller's repository files into the store: `assignments.json` and
/// the `<id hex>.json` beside each bundle. Each file is removed only once the store holds
/// what it said.
fn take_in_files(dir: &Path, store: &Store) -> Result<(), RepoError> {
    let assignments_path = dir.join("assignments.json");
    let assignments: BTreeMap<String, String> = match fs::read(&assignments_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RepoError::Io {
            path: assignments_path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(source) => {
            return Err(RepoError::Io {
                path: assignments_path,
                source,
            });
        }
    };
    let mut infos = Vec::new();
    let mut info_files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if check_hex("bundle id", hex).is_err() {
            continue;
        }
        let path = entry.path();
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let info: BundleInfo = serde_json::from_slice(&bytes).map_err(|e| RepoError::Io {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        infos.push((hex.to_owned(), info));
        info_files.push(path);
    }
    if assignments.is_empty() && infos.is_empty() && !assignments_path.exists() {
        return Ok(());
    }
    store.import_repository_files(&assignments, &infos)?;
    for path in info_files
        .iter()
        .chain(assignments_path.exists().then_some(&assignments_path))
    {
        fs::remove_file(path).map_err(io_err(path))?;
    }
    tracing::info!(
        bundles = infos.len(),
        assignments = assignments.len(),
        "bundle records and assignments moved from files into the controller store"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    const SHA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ID_HEX: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn open(dir: &Path) -> BundleRepo {
        let store = Arc::new(Store::open(&dir.join("store.redb")).unwrap());
        BundleRepo::open(dir.join("bundles"), dir.join("trust.json"), store).unwrap()
    }

    fn repo() -> (tempfile::TempDir, BundleRepo) {
        let dir = tempfile::tempdir().unwrap();
        let repo = open(dir.path());
        (dir, repo)
    }

    fn info(bytes: &[u8]) -> BundleInfo {
        BundleInfo {
            id: format!("sha256:{ID_HEX}"),
            size: bytes.len() as u64,
            file_sha256: SHA.to_owned(),
            ..BundleInfo::default()
        }
    }

    /// A bundle placed as `commit` would leave it.
    fn held(repo: &BundleRepo, bytes: &[u8]) -> String {
        fs::write(repo.bundle_path(ID_HEX), bytes).unwrap();
        repo.store.put_bundle_info(ID_HEX, &info(bytes)).unwrap().id
    }

    #[test]
    fn path_traversal_in_upload_digest_is_refused() {
        let (dir, repo) = repo();
        let err = repo
            .upload("../../../../etc/passwd", 10, 0, b"x")
            .unwrap_err();
        assert!(matches!(err, RepoError::BadRequest(_)), "{err}");
        assert!(!dir.path().join("etc").exists());
        let err = repo.commit("../x", "op", SystemTime::now()).unwrap_err();
        assert!(matches!(err, RepoError::BadRequest(_)), "{err}");
    }

    #[test]
    fn path_traversal_in_bundle_id_is_refused() {
        let (_dir, repo) = repo();
        for id in ["sha256:../../trust", "../assignments", ""] {
            assert!(matches!(
                repo.assign(id, &["n1".into()], |_| Vec::new()),
                Err(RepoError::BadRequest(_))
            ));
            assert!(matches!(
                repo.open_for_node("n1", id, 0),
                Err(RepoError::BadRequest(_))
            ));
        }
    }

    #[test]
    fn upload_beyond_its_announced_size_is_refused() {
        let (_dir, repo) = repo();
        assert_eq!(repo.upload(SHA, 4, 0, b"abc").unwrap(), 3);
        assert!(matches!(
            repo.upload(SHA, 4, 3, b"de"),
            Err(RepoError::BadRequest(_))
        ));
        assert!(matches!(
            repo.upload(SHA, MAX_BUNDLE_SIZE + 1, 0, b""),
            Err(RepoError::BadRequest(_))
        ));
    }

    #[test]
    fn out_of_order_upload_chunk_writes_nothing_and_names_the_resume_point() {
        let (_dir, repo) = repo();
        assert_eq!(repo.upload(SHA, 10, 0, b"0123").unwrap(), 4);
        assert_eq!(repo.upload(SHA, 10, 8, b"89").unwrap(), 4);
        assert_eq!(repo.upload(SHA, 10, 0, b"0123").unwrap(), 4);
        assert_eq!(repo.upload(SHA, 10, u64::MAX, b"").unwrap(), 4);
        assert_eq!(fs::read(repo.upload_path(SHA)).unwrap(), b"0123");
    }

    #[test]
    fn commit_of_bytes_that_do_not_match_their_digest_is_refused_and_discarded() {
        let (_dir, repo) = repo();
        repo.upload(SHA, 3, 0, b"abc").unwrap();
        let err = repo.commit(SHA, "op", SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("hash to"), "{err}");
        assert!(!repo.upload_path(SHA).exists());
        assert!(repo.list().unwrap().is_empty());
    }

    #[test]
    fn node_reading_a_bundle_not_assigned_to_it_is_refused() {
        let (_dir, repo) = repo();
        let id = held(&repo, b"bundle bytes");
        assert!(matches!(
            repo.open_for_node("n2", &id, 0),
            Err(RepoError::NotFound(_))
        ));
        repo.assign(&id, &["n1".into()], |_| Vec::new()).unwrap();
        let (mut file, size) = repo.open_for_node("n1", &id, 7).unwrap();
        let mut rest = String::new();
        file.read_to_string(&mut rest).unwrap();
        assert_eq!((rest.as_str(), size), ("bytes", 12));
        assert!(matches!(
            repo.open_for_node("n2", &id, 0),
            Err(RepoError::NotFound(_))
        ));
    }

    #[test]
    fn fetch_beyond_the_end_of_a_bundle_is_refused() {
        let (_dir, repo) = repo();
        let id = held(&repo, b"bundle bytes");
        repo.assign(&id, &["n1".into()], |_| Vec::new()).unwrap();
        assert!(repo.open_for_node("n1", &id, 12).is_ok());
        assert!(matches!(
            repo.open_for_node("n1", &id, 13),
            Err(RepoError::BadRequest(_))
        ));
    }

    #[test]
    fn assignments_survive_a_restart() {
        let (dir, repo) = repo();
        let id = held(&repo, b"bundle bytes");
        repo.assign(&id, &["n1".into(), "n2".into()], |_| Vec::new())
            .unwrap();
        drop(repo);
        let again = open(dir.path());
        assert_eq!(again.desired("n2")[0].id, id);
        assert_eq!(again.list().unwrap()[0].assigned, vec!["n1", "n2"]);
        assert!(again.desired("n3").is_empty());
    }

    /// A bundle of model `name` held under id `hex`.
    fn held_named(repo: &BundleRepo, hex: &str, name: &str, bytes: &[u8]) -> String {
        fs::write(repo.bundle_path(hex), bytes).unwrap();
        let info = BundleInfo {
            id: format!("sha256:{hex}"),
            name: name.to_owned(),
            ..info(bytes)
        };
        repo.store.put_bundle_info(hex, &info).unwrap().id
    }

    #[test]
    fn each_model_of_a_node_has_its_own_assignment() {
        let (dir, repo) = repo();
        let alpha = held_named(&repo, &"1".repeat(64), "alpha", b"one");
        let beta1 = held_named(&repo, &"2".repeat(64), "beta", b"two");
        let beta2 = held_named(&repo, &"3".repeat(64), "beta", b"three");
        for id in [&alpha, &beta1, &beta2] {
            repo.assign(id, &["n1".into()], |_| Vec::new()).unwrap();
        }
        let wanted = |repo: &BundleRepo| -> Vec<(String, String)> {
            repo.desired("n1")
                .into_iter()
                .map(|d| (d.model, d.id))
                .collect()
        };
        let expected = vec![
            ("alpha".to_owned(), alpha.clone()),
            ("beta".to_owned(), beta2.clone()),
        ];
        assert_eq!(
            wanted(&repo),
            expected,
            "beta's second bundle replaced its first only"
        );
        assert_eq!(
            repo.assigned("n1", "alpha").as_deref(),
            Some(alpha.as_str())
        );
        assert!(repo.open_for_node("n1", &alpha, 0).is_ok());
        assert!(matches!(
            repo.open_for_node("n1", &beta1, 0),
            Err(RepoError::NotFound(_))
        ));
        drop(repo);
        assert_eq!(wanted(&open(dir.path())), expected, "after a restart");
    }

    #[test]
    fn assigning_a_bundle_not_held_is_refused() {
        let (_dir, repo) = repo();
        let err = repo
            .assign(&format!("sha256:{ID_HEX}"), &["n1".into()], |_| Vec::new())
            .unwrap_err();
        assert!(matches!(err, RepoError::NotFound(_)), "{err}");
    }

    #[test]
    fn an_assignment_and_its_audit_entry_are_one_transaction() {
        let (dir, repo) = repo();
        let id = held(&repo, b"bundle bytes");
        let entry = crate::audit::entry("alice", "bundle.assign", &id, serde_json::Value::Null);
        repo.assign(&id, &["n1".into()], |_| vec![entry]).unwrap();
        // A change naming a bundle not held changes nothing and records nothing.
        let missing = Assignment {
            node: "n2".into(),
            model: String::new(),
            bundle: Some(format!("sha256:{}", "c".repeat(64))),
        };
        let entry = crate::audit::entry("alice", "bundle.assign", "x", serde_json::Value::Null);
        assert!(
            repo.commit_assignments(&[missing], None, vec![entry])
                .is_err()
        );
        drop(repo);
        let store = Store::open(&dir.path().join("store.redb")).unwrap();
        assert_eq!(store.assignments().unwrap().len(), 1);
        let mut actions = Vec::new();
        store.scan_audit(|e| actions.push(e.action)).unwrap();
        assert_eq!(actions, ["bundle.assign"]);
    }

    #[test]
    fn an_older_controller_s_files_move_into_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let bundles = dir.path().join("bundles");
        fs::create_dir_all(&bundles).unwrap();
        fs::write(bundles.join(format!("{ID_HEX}.gbundle")), b"bundle bytes").unwrap();
        fs::write(
            bundles.join(format!("{ID_HEX}.json")),
            serde_json::to_vec(&info(b"bundle bytes")).unwrap(),
        )
        .unwrap();
        let assignments = BTreeMap::from([("n1".to_owned(), format!("sha256:{ID_HEX}"))]);
        fs::write(
            bundles.join("assignments.json"),
            serde_json::to_vec(&assignments).unwrap(),
        )
        .unwrap();
        let repo = open(dir.path());
        assert_eq!(repo.desired("n1")[0].id, format!("sha256:{ID_HEX}"));
        assert_eq!(repo.list().unwrap()[0].assigned, vec!["n1"]);
        assert!(!bundles.join("assignments.json").exists());
        assert!(!bundles.join(format!("{ID_HEX}.json")).exists());
        drop(repo);
        assert_eq!(open(dir.path()).list().unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_assignments_file_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let bundles = dir.path().join("bundles");
        fs::create_dir_all(&bundles).unwrap();
        fs::write(bundles.join("assignments.json"), b"{not json").unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        let err =
            BundleRepo::open(bundles.clone(), dir.path().join("trust.json"), store).unwrap_err();
        assert!(err.to_string().contains("assignments.json"), "{err}");
        assert!(bundles.join("assignments.json").exists());
    }
}
