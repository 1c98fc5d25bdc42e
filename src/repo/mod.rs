//! The repository: a marker object with the format version, and dumps
//! (`dumps/<id>/packs/*.pack` + `dumps/<id>/manifest.json`). A dump exists
//! for readers only once its manifest is written, and manifests are written
//! last. Nothing is ever overwritten. Jobs never build keys: they ask here.
//!
//! Deleting a set is crash-safe: a `deleting.json` marker goes in first,
//! then the manifest, then the rest, then the marker. From the marker on,
//! the set is neither listed nor loaded as complete, and
//! [`Repository::finish_deletions`] (run by `expire` and `delete`) finishes
//! whatever an interrupted deletion left.
//!
//! Object Lock (`pgtide init --object-lock`, recorded in the marker): the
//! repository then holds two handles on its store. [`Repository::storage`]
//! writes every object with the retention; [`Repository::unretained_storage`]
//! writes the objects that are rewritten or removed by design (the writer
//! lock, `deleting.json`, run records, WAL partials) without. A set is
//! deleted only once no object of it is retained any more: before that,
//! `delete` refuses with [`RepoError::Retained`] and touches nothing.

pub mod encryption;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod retention;
pub mod runs;
mod sets;
pub mod wal_archive;
pub mod wal_index;
pub mod wal_pieces;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::storage::{self, DynStorage, Retention, RetentionMode, StorageError};
pub use layout::SetKind;
use manifest::{DumpManifest, ManifestHeader, NEWEST_READABLE_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no pgtide repository at {location} (check --repo; a dump creates one)")]
    NotARepository { location: String },
    #[error("repository at {location} has format version {found}, newer than this pgtide supports ({supported}): upgrade pgtide")]
    FormatTooNew {
        location: String,
        found: u32,
        supported: u32,
    },
    #[error("{key} is not a valid pgtide object: {reason}")]
    BadObject { key: String, reason: String },
    /// Missing, wrong or removed key of an encrypted repository.
    #[error(transparent)]
    Key(#[from] crate::crypt::keys::KeyError),
    #[error("{what} was written under key epoch {epoch}, which the key given cannot open (a key added after it was written, or removed before)")]
    EpochLocked { what: String, epoch: u32 },
    #[error("repository {location} is not encrypted: --identity and --passphrase-file do not apply to it")]
    NotEncrypted { location: String },
    /// An authenticated object of an encrypted repository failed its check.
    #[error("{key} failed authentication: {reason}")]
    Tampered { key: String, reason: String },
    #[error("a pgtide repository already exists at {location}")]
    AlreadyExists { location: String },
    /// `pgtide copy` into a repository encrypted the other way.
    #[error("repository {location} is {}: copy into an empty location or a repository like the source", if *encrypted { "encrypted, the source is not" } else { "not encrypted, the source is" })]
    EncryptionDiffers { location: String, encrypted: bool },
    /// `pgtide copy` into an encrypted repository with other keys.
    #[error("repository {location} holds another {key} than the source: it is encrypted for other keys; copy into an empty location")]
    KeysDiffer { location: String, key: String },
    #[error("no {kind} {id} in {location} (see pgtide list)")]
    NoSuch {
        kind: &'static str,
        id: String,
        location: String,
    },
    #[error("{kind} {id} is being deleted (an interrupted deletion): pgtide expire or pgtide delete {id} finishes it")]
    BeingDeleted { kind: &'static str, id: String },
    #[error("no complete {kind} in {location}")]
    Empty {
        kind: &'static str,
        location: String,
    },
    #[error("{id} is not a valid {kind} id (dump ids look like 20261123-060012D, backup ids like 20261123-060012F)")]
    BadId { id: String, kind: &'static str },
    #[error("repository {location} belongs to the cluster with system identifier {repo}, not to this one ({found}): use another --repo")]
    OtherCluster {
        location: String,
        repo: String,
        found: String,
    },
    /// Another process holds the writer lock.
    #[error("repository {location} is locked by {holder}: wait for it to finish, or stop it (a lock whose holder stopped is taken over once it is stale)")]
    Locked { location: String, holder: String },
    #[error(
        "repository {location} holds WAL segments of {repo} bytes, but the server uses {found}"
    )]
    SegmentSizeMismatch {
        location: String,
        repo: u64,
        found: u64,
    },
    /// Object Lock: an object of the set is retained until `until`.
    #[error("{kind} {id} is under Object Lock retention until {}: it can be deleted from then on (nothing was deleted)", until.format("%Y-%m-%dT%H:%M:%SZ"))]
    Retained {
        kind: &'static str,
        id: String,
        until: DateTime<Utc>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: String,
    format_version: u32,
    created_at: chrono::DateTime<Utc>,
    /// Absent: a plain repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encryption: Option<encryption::MarkerEncryption>,
    /// Object Lock retention of the objects kept; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object_lock: Option<ObjectLock>,
}

/// The `object_lock` of `pgtide.json`: every object pgtide keeps in the
/// repository is written with retention `mode` until at least `seconds`
/// after it was written (docs/FORMAT.md, "Object Lock").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLock {
    pub mode: RetentionMode,
    pub seconds: u64,
}

impl ObjectLock {
    pub fn retention(&self) -> Retention {
        Retention {
            mode: self.mode,
            period: std::time::Duration::from_secs(self.seconds),
        }
    }
}

/// The repository version of a plain repository: readers since the first
/// release read it.
pub const REPO_VERSION_PLAIN: u32 = 1;
/// An encrypted repository (every stored frame sealed, `keys/`): older
/// readers must refuse it rather than misread it.
pub const REPO_VERSION_ENCRYPTED: u32 = 2;
/// A repository with Object Lock (encrypted or not): an older pgtide would
/// write objects without retention into it and "delete" retained ones
/// behind delete markers, so it must refuse it.
pub const REPO_VERSION_OBJECT_LOCK: u32 = 3;
/// The newest repository version this pgtide reads.
pub const REPO_VERSION_NEWEST: u32 = REPO_VERSION_OBJECT_LOCK;

const MARKER_FORMAT: &str = "pgtide-repository";

/// The cluster whose physical backups and WAL this repository holds.
/// Written once (create-if-absent) by the first physical job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub system_identifier: String,
    pub wal_segment_size: u64,
    pub bound_at: chrono::DateTime<Utc>,
}

/// A dump whose manifest is missing: still running, or it failed. Also a
/// set whose deletion was interrupted (`Listing::deleting`).
#[derive(Debug, Clone, Serialize)]
pub struct IncompleteDump {
    pub id: String,
    pub objects: usize,
    pub bytes: u64,
}

/// What a listing of a kind's prefix says of one set.
#[derive(Debug, Default)]
struct SetObjects {
    manifest: bool,
    deleting: bool,
    objects: usize,
    bytes: u64,
}

/// The contents of a `deleting.json` marker.
#[derive(Debug, Serialize, Deserialize)]
struct DeletingMarker {
    deleting_since: chrono::DateTime<Utc>,
    pgtide_version: String,
}

/// A set whose interrupted deletion was finished.
#[derive(Debug, Clone, Serialize)]
pub struct FinishedDeletion {
    pub id: String,
    pub objects: usize,
    pub bytes_freed: u64,
}

#[derive(Debug, Clone)]
pub struct Repository {
    /// Writes carry the repository's Object Lock retention, if it has one.
    storage: DynStorage,
    /// The same store, writes without retention.
    unretained: DynStorage,
    object_lock: Option<ObjectLock>,
    /// Present for an encrypted repository.
    crypt: Option<std::sync::Arc<encryption::RepoCrypt>>,
}

impl Repository {
    /// Open an existing repository; with `create`, make a new one where none is.
    pub async fn open(url: &str, create: bool) -> Result<Repository, RepoError> {
        let storage = storage::open(url).await?;
        Self::open_storage(storage, create).await
    }

    pub async fn open_storage(storage: DynStorage, create: bool) -> Result<Repository, RepoError> {
        let mut repo = Repository::plain(storage);
        let marker = match repo.storage.get(layout::MARKER).await {
            Ok(bytes) => repo.check_marker(&bytes)?,
            Err(StorageError::NotFound { .. }) if create => {
                match repo.put_marker(None, None).await? {
                    Some(m) => m,
                    None => return Ok(repo),
                }
            }
            Err(StorageError::NotFound { .. }) => {
                return Err(RepoError::NotARepository {
                    location: repo.location(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(lock) = marker.object_lock {
            match repo.storage.with_retention(lock.retention()) {
                Ok(s) => repo.lock_with(s, lock),
                // A copy of a locked repository on a store without Object
                // Lock (a local mirror of the bucket, for a restore): it
                // reads as well; what is written here is not retained.
                Err(e @ StorageError::RetentionUnsupported { .. }) => {
                    tracing::warn!("the repository records Object Lock, but {e}: objects written here carry no retention")
                }
                Err(e) => return Err(e.into()),
            }
        }
        repo.load_crypt(&marker).await?;
        Ok(repo)
    }

    /// The target of `pgtide copy`: an existing repository as it is, or an
    /// empty store made a repository like `source`: encrypted with the same
    /// key sets (their objects copied unchanged, before the marker, so it
    /// is never seen encrypted without its keys), or plain. Object Lock is
    /// the target store's own matter (`pgtide init --object-lock` first) and
    /// is not carried over. Key sets the source has and an existing target
    /// lacks (a rotation since the last copy) are copied too; a target whose
    /// key sets differ from the source's is refused.
    pub async fn open_copy_target(
        storage: DynStorage,
        source: &Repository,
    ) -> Result<Repository, RepoError> {
        let exists = match storage.size(layout::MARKER).await {
            Ok(_) => true,
            Err(StorageError::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if source.encrypted() {
            let theirs: std::collections::HashMap<String, u64> = storage
                .list(layout::KEYS)
                .await?
                .into_iter()
                .map(|o| (o.key, o.size))
                .collect();
            for o in source.storage.list(layout::KEYS).await? {
                let bytes = source.storage.get(&o.key).await?;
                if theirs.contains_key(&o.key) {
                    if storage.get(&o.key).await? != bytes {
                        return Err(RepoError::KeysDiffer {
                            location: storage.location(),
                            key: o.key,
                        });
                    }
                    continue;
                }
                match storage.put_if_absent(&o.key, bytes).await {
                    Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if !exists {
            let enc = source.encrypted().then(|| encryption::MarkerEncryption {
                scheme: crate::crypt::SCHEME.into(),
            });
            Repository::plain(storage.clone())
                .put_marker(enc, None)
                .await?;
        }
        let target = Self::open_storage(storage, false).await?;
        if target.encrypted() != source.encrypted() {
            return Err(RepoError::EncryptionDiffers {
                location: target.location(),
                encrypted: target.encrypted(),
            });
        }
        Ok(target)
    }

    fn plain(storage: DynStorage) -> Repository {
        Repository {
            unretained: storage.clone(),
            storage,
            object_lock: None,
            crypt: None,
        }
    }

    /// Write through `storage` (a handle with `lock`'s retention) from now on.
    fn lock_with(&mut self, storage: DynStorage, lock: ObjectLock) {
        self.unretained = storage::unretained(&storage);
        self.storage = storage;
        self.object_lock = Some(lock);
    }

    /// The repository's Object Lock setting, if it has one (and its store
    /// keeps retention).
    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.object_lock
    }

    /// The repository version of its marker.
    pub fn format_version(&self) -> u32 {
        repo_version(self.crypt.is_some(), self.object_lock.is_some())
    }

    /// Create a new repository (`pgtide init`): with `keys`, encrypted;
    /// with `object_lock`, under Object Lock (the store is checked first,
    /// and every object from the key set on is retained). An existing
    /// repository is an error. The key set goes in before the marker, so a
    /// repository is never seen encrypted without its keys.
    pub async fn init(
        storage: DynStorage,
        keys: Option<crate::crypt::KeySet>,
        object_lock: Option<ObjectLock>,
    ) -> Result<Repository, RepoError> {
        let mut repo = Repository::plain(storage);
        if let Some(lock) = object_lock {
            repo.storage.check_retention().await?;
            let retained = repo.storage.with_retention(lock.retention())?;
            repo.lock_with(retained, lock);
        }
        match repo.storage.size(layout::MARKER).await {
            Ok(_) => {
                return Err(RepoError::AlreadyExists {
                    location: repo.location(),
                })
            }
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let enc = match &keys {
            Some(k) => {
                repo.write_key_set(k).await?;
                Some(encryption::MarkerEncryption {
                    scheme: crate::crypt::SCHEME.into(),
                })
            }
            None => None,
        };
        match repo.put_marker(enc, object_lock).await? {
            None => {}
            Some(_) => {
                return Err(RepoError::AlreadyExists {
                    location: repo.location(),
                })
            }
        }
        if let Some(k) = keys {
            repo.crypt = Some(std::sync::Arc::new(encryption::RepoCrypt::new(
                k,
                Vec::new(),
            )?));
        }
        Ok(repo)
    }

    /// Write the marker if absent. `None`: written; `Some`: someone else's
    /// was there (created at the same moment), checked and returned.
    async fn put_marker(
        &self,
        encryption: Option<encryption::MarkerEncryption>,
        object_lock: Option<ObjectLock>,
    ) -> Result<Option<Marker>, RepoError> {
        let marker = Marker {
            format: MARKER_FORMAT.into(),
            format_version: repo_version(encryption.is_some(), object_lock.is_some()),
            created_at: Utc::now(),
            encryption,
            object_lock,
        };
        let body = serde_json::to_vec_pretty(&marker).expect("marker serializes");
        match self
            .storage
            .put_if_absent(layout::MARKER, body.into())
            .await
        {
            Ok(()) => Ok(None),
            Err(StorageError::AlreadyExists { .. }) => {
                let bytes = self.storage.get(layout::MARKER).await?;
                Ok(Some(self.check_marker(&bytes)?))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn load_crypt(&mut self, marker: &Marker) -> Result<(), RepoError> {
        let Some(e) = &marker.encryption else {
            return Ok(());
        };
        if e.scheme != crate::crypt::SCHEME {
            return Err(RepoError::BadObject {
                key: layout::MARKER.into(),
                reason: format!(
                    "unknown encryption scheme {:?}: a newer pgtide wrote it",
                    e.scheme
                ),
            });
        }
        let mut sets = self.read_key_sets().await?;
        let current = sets.pop().expect("read_key_sets returns at least one");
        self.crypt = Some(std::sync::Arc::new(encryption::RepoCrypt::new(
            current, sets,
        )?));
        Ok(())
    }

    fn check_marker(&self, bytes: &[u8]) -> Result<Marker, RepoError> {
        let m: Marker = serde_json::from_slice(bytes).map_err(|e| RepoError::BadObject {
            key: layout::MARKER.into(),
            reason: e.to_string(),
        })?;
        if m.format != MARKER_FORMAT {
            return Err(RepoError::BadObject {
                key: layout::MARKER.into(),
                reason: format!("unknown format {:?}", m.format),
            });
        }
        if m.format_version > REPO_VERSION_NEWEST {
            return Err(RepoError::FormatTooNew {
                location: self.location(),
                found: m.format_version,
                supported: REPO_VERSION_NEWEST,
            });
        }
        Ok(m)
    }

    /// The cluster this repository belongs to, if a physical job bound one.
    pub async fn cluster(&self) -> Result<Option<ClusterInfo>, RepoError> {
        match self.storage.get(layout::CLUSTER).await {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| RepoError::BadObject {
                    key: layout::CLUSTER.into(),
                    reason: e.to_string(),
                }),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Bind the repository to a cluster, or check it is bound to this one.
    pub async fn bind_cluster(
        &self,
        system_identifier: &str,
        wal_segment_size: u64,
    ) -> Result<ClusterInfo, RepoError> {
        let check = |c: ClusterInfo| {
            if c.system_identifier != system_identifier {
                return Err(RepoError::OtherCluster {
                    location: self.location(),
                    repo: c.system_identifier,
                    found: system_identifier.to_string(),
                });
            }
            if c.wal_segment_size != wal_segment_size {
                return Err(RepoError::SegmentSizeMismatch {
                    location: self.location(),
                    repo: c.wal_segment_size,
                    found: wal_segment_size,
                });
            }
            Ok(c)
        };
        if let Some(c) = self.cluster().await? {
            return check(c);
        }
        let info = ClusterInfo {
            system_identifier: system_identifier.to_string(),
            wal_segment_size,
            bound_at: Utc::now(),
        };
        let body = serde_json::to_vec_pretty(&info).expect("cluster info serializes");
        match self
            .storage
            .put_if_absent(layout::CLUSTER, body.into())
            .await
        {
            Ok(()) => Ok(info),
            Err(StorageError::AlreadyExists { .. }) => {
                let c = self.cluster().await?.ok_or_else(|| RepoError::BadObject {
                    key: layout::CLUSTER.into(),
                    reason: "vanished while being read".into(),
                })?;
                check(c)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Before a restore reads a set: every pack it lists is present with the
    /// recorded size (one listing, no reads). `Err` describes the first
    /// problem, for a "damaged" error.
    pub async fn check_packs(
        &self,
        kind: SetKind,
        id: &str,
        packs: &[crate::chunk::PackInfo],
    ) -> Result<Result<(), String>, RepoError> {
        let listed: std::collections::HashMap<String, u64> = self
            .storage
            .list(&layout::set_packs(kind, id))
            .await?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        for p in packs {
            match listed.get(&p.key) {
                None => return Ok(Err(format!("pack {} is missing", p.key))),
                Some(&size) if size != p.size => {
                    return Ok(Err(format!(
                        "pack {} has {size} bytes, the manifest records {}",
                        p.key, p.size
                    )))
                }
                _ => {}
            }
        }
        Ok(Ok(()))
    }

    /// The store; what is written through it carries the repository's
    /// Object Lock retention.
    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }

    /// The store without retention on writes: only for objects rewritten or
    /// removed by design (docs/FORMAT.md, "Object Lock").
    pub fn unretained_storage(&self) -> &DynStorage {
        &self.unretained
    }

    /// The retain-until date of each of `keys` that has one (none in a
    /// repository without Object Lock). Objects gone meanwhile have none.
    pub async fn retained_until_each(
        &self,
        keys: &[String],
    ) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>, RepoError> {
        use futures::StreamExt as _;
        let mut out = std::collections::BTreeMap::new();
        if self.object_lock.is_none() {
            return Ok(out);
        }
        // Owned futures: a borrowing closure here trips the compiler's
        // Send check of the daemon's job futures.
        let storage = self.storage.clone();
        let mut dates = futures::stream::iter(keys.to_vec())
            .map(move |k| {
                let s = storage.clone();
                async move {
                    let t = s.retained_until(&k).await;
                    (k, t)
                }
            })
            .buffer_unordered(16);
        while let Some((k, r)) = dates.next().await {
            match r {
                Ok(Some(t)) => {
                    out.insert(k, t);
                }
                Ok(None) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The latest retain-until date among `keys` (`None`: none retained).
    pub async fn retained_until_of(
        &self,
        keys: &[String],
    ) -> Result<Option<DateTime<Utc>>, RepoError> {
        Ok(self.retained_until_each(keys).await?.into_values().max())
    }

    /// Object Lock: until when the set `id` can certainly not be deleted, by
    /// its manifest's retention alone (one request). The manifest is written
    /// last, so no object of a complete set is retained longer; `delete`
    /// still checks every object.
    pub async fn manifest_retained_until(
        &self,
        kind: SetKind,
        id: &str,
    ) -> Result<Option<DateTime<Utc>>, RepoError> {
        self.retained_until_of(&[layout::set_manifest(kind, id)])
            .await
    }

    /// The WAL archive of this repository (sealing and opening objects when
    /// it is encrypted).
    pub fn wal_archive(
        &self,
        seg_size: u64,
        compression: crate::chunk::Compression,
    ) -> wal_archive::WalArchive {
        wal_archive::WalArchive::new(self.storage.clone(), seg_size, compression)
            .with_crypt(self.crypt.clone())
    }

    pub fn location(&self) -> String {
        self.storage.location()
    }

    /// Reserve a new id of `kind` by creating its `started.json`.
    pub async fn begin(
        &self,
        kind: SetKind,
        info: &serde_json::Value,
    ) -> Result<String, RepoError> {
        let body = Bytes::from(serde_json::to_vec_pretty(info).expect("json serializes"));
        let now = Utc::now();
        for attempt in 0..100 {
            let id = layout::new_id(now, kind.letter(), attempt);
            match self
                .storage
                .put_if_absent(&layout::set_started(kind, &id), body.clone())
                .await
            {
                Ok(()) => return Ok(id),
                Err(StorageError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::BadObject {
            key: kind.prefix().into(),
            reason: format!("could not allocate a {} id", kind.noun()),
        })
    }

    pub async fn begin_dump(&self, info: &serde_json::Value) -> Result<String, RepoError> {
        self.begin(SetKind::Dump, info).await
    }

    /// The key of each pack of a set, by number (for `pipeline::PackSet`).
    pub fn pack_keys(
        &self,
        kind: SetKind,
        id: &str,
    ) -> std::sync::Arc<dyn Fn(u32) -> String + Send + Sync> {
        let id = id.to_string();
        std::sync::Arc::new(move |i| layout::pack_key(kind, &id, i))
    }

    /// Write a manifest: from now on the set is complete and listed.
    pub async fn commit<T: Serialize>(
        &self,
        kind: SetKind,
        id: &str,
        m: &T,
    ) -> Result<(), RepoError> {
        let v = serde_json::to_value(m).expect("manifest serializes");
        let v = self.seal_manifest(kind, id, v)?;
        let body = serde_json::to_vec(&v).expect("manifest serializes");
        self.storage
            .put_if_absent(&layout::set_manifest(kind, id), body.into())
            .await?;
        Ok(())
    }

    pub async fn commit_dump(&self, m: &DumpManifest) -> Result<(), RepoError> {
        self.commit(SetKind::Dump, &m.id, m).await
    }

    /// Read and check a manifest of `kind`.
    pub async fn load<T: DeserializeOwned>(&self, kind: SetKind, id: &str) -> Result<T, RepoError> {
        if !layout::valid_id(id) || SetKind::of_id(id) != Some(kind) {
            return Err(RepoError::BadId {
                id: id.into(),
                kind: kind.noun(),
            });
        }
        let key = layout::set_manifest(kind, id);
        let bytes = match self.storage.get(&key).await {
            Ok(b) => b,
            Err(StorageError::NotFound { .. }) => {
                return Err(RepoError::NoSuch {
                    kind: kind.noun(),
                    id: id.into(),
                    location: self.location(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        // The marker goes in before the manifest goes: a manifest beside it
        // is what an interrupted deletion left.
        match self.storage.size(&layout::set_deleting(kind, id)).await {
            Ok(_) => {
                return Err(RepoError::BeingDeleted {
                    kind: kind.noun(),
                    id: id.into(),
                })
            }
            Err(StorageError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let m = parse_manifest(&key, &bytes, kind.noun())?;
        self.open_manifest(&key, id, &bytes)?;
        Ok(m)
    }

    pub async fn load_dump(&self, id: &str) -> Result<DumpManifest, RepoError> {
        self.load(SetKind::Dump, id).await
    }
}

/// The repository version of a marker with these features.
fn repo_version(encrypted: bool, object_lock: bool) -> u32 {
    if object_lock {
        REPO_VERSION_OBJECT_LOCK
    } else if encrypted {
        REPO_VERSION_ENCRYPTED
    } else {
        REPO_VERSION_PLAIN
    }
}

/// With no --repo and no PGTIDE_REPO: a local directory, so the first dump
/// works with no cloud account. `$XDG_DATA_HOME/pgtide/repo`, else
/// `~/.local/share/pgtide/repo`, else `./pgtide-repo`.
pub fn default_location() -> String {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return std::path::PathBuf::from(x)
            .join("pgtide/repo")
            .display()
            .to_string();
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return std::path::PathBuf::from(h)
            .join(".local/share/pgtide/repo")
            .display()
            .to_string();
    }
    "pgtide-repo".into()
}

fn parse_manifest<T: DeserializeOwned>(
    key: &str,
    bytes: &[u8],
    kind: &str,
) -> Result<T, RepoError> {
    let header: ManifestHeader =
        serde_json::from_slice(bytes).map_err(|e| RepoError::BadObject {
            key: key.into(),
            reason: e.to_string(),
        })?;
    if header.format_version > NEWEST_READABLE_VERSION {
        return Err(RepoError::FormatTooNew {
            location: key.into(),
            found: header.format_version,
            supported: NEWEST_READABLE_VERSION,
        });
    }
    if header.kind != kind {
        return Err(RepoError::BadObject {
            key: key.into(),
            reason: format!("expected a {kind} manifest, found kind {:?}", header.kind),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| RepoError::BadObject {
        key: key.into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn repo() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = std::sync::Arc::new(crate::storage::LocalFs::new(dir.path()));
        (dir, Repository::open_storage(storage, true).await.unwrap())
    }

    /// A complete backup: started.json, one pack, a manifest.
    async fn complete(r: &Repository, id: &str) {
        let s = r.storage();
        let k = SetKind::Backup;
        s.put_if_absent(&layout::set_started(k, id), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        s.put_if_absent(
            &format!("{}0001.pack", layout::set_packs(k, id)),
            Bytes::from(vec![7; 1000]),
        )
        .await
        .unwrap();
        s.put_if_absent(&layout::set_manifest(k, id), Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_interrupted_deletion_is_never_complete_and_is_finished_later() {
        let (_dir, r) = repo().await;
        let k = SetKind::Backup;
        let (a, b, c) = ("20261201-030000F", "20261202-030000F", "20261203-030000F");
        for id in [a, b, c] {
            complete(&r, id).await;
        }
        // a: killed right after the marker went in (the manifest is still
        // there); b: killed after the manifest went.
        for id in [a, b] {
            r.storage()
                .put_if_absent(&layout::set_deleting(k, id), Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        r.storage()
            .delete_many(&[layout::set_manifest(k, b)])
            .await
            .unwrap();
        assert_eq!(r.ids(k).await.unwrap(), [c]);
        assert!(r.incomplete(k).await.unwrap().is_empty());
        let deleting: Vec<String> = r
            .deleting(k)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(deleting, [a, b]);
        assert!(matches!(
            r.load::<serde_json::Value>(k, a).await,
            Err(RepoError::BeingDeleted { .. })
        ));
        assert!(matches!(
            r.load::<serde_json::Value>(k, b).await,
            Err(RepoError::NoSuch { .. })
        ));
        assert_eq!(r.resolve(k, "latest").await.unwrap(), c);

        let finished = r.finish_deletions().await.unwrap();
        assert_eq!(
            finished.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            [a, b]
        );
        assert!(finished[0].bytes_freed > 1000);
        for id in [a, b] {
            assert!(r
                .storage()
                .list(&layout::set_prefix(k, id))
                .await
                .unwrap()
                .is_empty());
        }
        assert!(r.finish_deletions().await.unwrap().is_empty());
        assert_eq!(r.ids(k).await.unwrap(), [c]);

        // A plain delete leaves nothing behind, marker included.
        assert!(r.delete(k, c).await.unwrap() > 1000);
        assert!(r.storage().list(k.prefix()).await.unwrap().is_empty());
        assert!(matches!(
            r.delete(k, c).await,
            Err(RepoError::NoSuch { .. })
        ));
    }

    /// A store with Object Lock for unit tests: a local directory whose
    /// retained handle records a retain-until date per key (the write time
    /// plus the period) and refuses to delete a key before it.
    #[derive(Debug, Clone)]
    struct Locking {
        local: crate::storage::LocalFs,
        retention: Option<Retention>,
        dates: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>>,
    }

    impl Locking {
        fn new(dir: &std::path::Path) -> Locking {
            Locking {
                local: crate::storage::LocalFs::new(dir),
                retention: None,
                dates: Default::default(),
            }
        }

        fn stamp(&self, key: &str) {
            if let Some(r) = self.retention {
                let mut d = self.dates.lock().unwrap();
                d.insert(key.to_string(), r.until(Utc::now()));
            }
        }

        /// Pretend the retention of every object ended (time passed).
        fn expire_all(&self) {
            for t in self.dates.lock().unwrap().values_mut() {
                *t = Utc::now() - chrono::TimeDelta::seconds(1);
            }
        }
    }

    #[async_trait::async_trait]
    impl crate::storage::Storage for Locking {
        fn location(&self) -> String {
            self.local.location()
        }
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
            self.local.put(key, data).await?;
            self.stamp(key);
            Ok(())
        }
        async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
            self.local.put_if_absent(key, data).await?;
            self.stamp(key);
            Ok(())
        }
        async fn writer(
            &self,
            key: &str,
        ) -> Result<Box<dyn crate::storage::ObjectWriter>, StorageError> {
            self.stamp(key);
            self.local.writer(key).await
        }
        async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
            self.local.get(key).await
        }
        async fn get_range(&self, key: &str, o: u64, l: u64) -> Result<Bytes, StorageError> {
            self.local.get_range(key, o, l).await
        }
        async fn size(&self, key: &str) -> Result<u64, StorageError> {
            self.local.size(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<storage::ObjectMeta>, StorageError> {
            self.local.list(prefix).await
        }
        async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
            let now = Utc::now();
            for k in keys {
                if let Some(t) = self.dates.lock().unwrap().get(k).filter(|t| **t > now) {
                    return Err(StorageError::Retained {
                        key: k.clone(),
                        until: Some(*t),
                    });
                }
            }
            self.dates.lock().unwrap().retain(|k, _| !keys.contains(k));
            self.local.delete_many(keys).await
        }
        async fn check_retention(&self) -> Result<(), StorageError> {
            Ok(())
        }
        fn with_retention(&self, r: Retention) -> Result<DynStorage, StorageError> {
            let mut s = self.clone();
            s.retention = Some(r);
            Ok(std::sync::Arc::new(s))
        }
        fn without_retention(&self) -> Option<DynStorage> {
            self.retention?;
            let mut s = self.clone();
            s.retention = None;
            Some(std::sync::Arc::new(s))
        }
        async fn retained_until(&self, key: &str) -> Result<Option<DateTime<Utc>>, StorageError> {
            self.local.size(key).await?;
            Ok(self.dates.lock().unwrap().get(key).copied())
        }
    }

    const LOCK: ObjectLock = ObjectLock {
        mode: RetentionMode::Governance,
        seconds: 3600,
    };

    #[tokio::test]
    async fn object_lock_needs_a_store_that_keeps_it_and_is_recorded_in_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let local: DynStorage = std::sync::Arc::new(crate::storage::LocalFs::new(dir.path()));
        let e = Repository::init(local.clone(), None, Some(LOCK))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Object Lock retention is not available on {}: this store keeps no retention; use an S3 bucket with Object Lock, an Azure container with version-level immutability or a GCS bucket with object retention",
                dir.path().display()
            )
        );
        assert!(local.list("").await.unwrap().is_empty(), "nothing written");

        let store = Locking::new(dir.path());
        let dates = store.dates.clone();
        let r = Repository::init(std::sync::Arc::new(store.clone()), None, Some(LOCK))
            .await
            .unwrap();
        assert_eq!(r.object_lock(), Some(LOCK));
        assert_eq!(r.format_version(), 3);
        let marker: serde_json::Value =
            serde_json::from_slice(&local.get(layout::MARKER).await.unwrap()).unwrap();
        assert_eq!(marker["format_version"], 3);
        assert_eq!(
            marker["object_lock"],
            serde_json::json!({"mode": "governance", "seconds": 3600})
        );
        // The marker itself is retained.
        assert!(dates.lock().unwrap().contains_key(layout::MARKER));
        // Opened again, the retention comes back from the marker.
        let again = Repository::open_storage(std::sync::Arc::new(store.clone()), false)
            .await
            .unwrap();
        assert_eq!(again.object_lock(), Some(LOCK));
        assert!(matches!(
            Repository::init(std::sync::Arc::new(store), None, None).await,
            Err(RepoError::AlreadyExists { .. })
        ));
        // A local copy of the bucket reads, without retention.
        let copy = Repository::open_storage(local, false).await.unwrap();
        assert_eq!(copy.object_lock(), None);

        // A plain repository's marker has no `object_lock` and version 1.
        let plain_dir = tempfile::tempdir().unwrap();
        let plain: DynStorage = std::sync::Arc::new(crate::storage::LocalFs::new(plain_dir.path()));
        Repository::init(plain.clone(), None, None).await.unwrap();
        let marker: serde_json::Value =
            serde_json::from_slice(&plain.get(layout::MARKER).await.unwrap()).unwrap();
        assert_eq!(marker["format_version"], 1);
        assert!(marker.get("object_lock").is_none());
    }

    #[tokio::test]
    async fn a_retained_set_is_not_touched_until_its_date() {
        let dir = tempfile::tempdir().unwrap();
        let store = Locking::new(dir.path());
        let r = Repository::init(std::sync::Arc::new(store.clone()), None, Some(LOCK))
            .await
            .unwrap();
        let (k, id) = (SetKind::Backup, "20261201-030000F");
        complete(&r, id).await;
        let dates = store.dates.lock().unwrap().clone();
        // Every object of the set is retained; the manifest, written last,
        // longest.
        let until = dates[&layout::set_manifest(k, id)];
        assert!(dates.values().all(|t| *t <= until));
        assert_eq!(r.manifest_retained_until(k, id).await.unwrap(), Some(until));
        match r.delete(k, id).await {
            Err(e @ RepoError::Retained { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "backup {id} is under Object Lock retention until {}: it can be deleted from then on (nothing was deleted)",
                    until.format("%Y-%m-%dT%H:%M:%SZ")
                )
            ),
            other => panic!("{other:?}"),
        }
        // Untouched: no deletion marker, still complete and listed.
        assert_eq!(r.ids(k).await.unwrap(), [id]);
        assert!(r.deleting(k).await.unwrap().is_empty());
        // A run record and the writer lock are written without retention.
        let lock = lock::RepoLock::acquire(&r, "test", Default::default())
            .await
            .unwrap();
        assert!(!store.dates.lock().unwrap().contains_key(layout::LOCK));
        lock.release().await.unwrap();

        store.expire_all();
        assert!(r.delete(k, id).await.unwrap() > 1000);
        assert!(r.storage().list(k.prefix()).await.unwrap().is_empty());
    }
}
