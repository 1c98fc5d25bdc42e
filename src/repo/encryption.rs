//! What an encrypted repository adds to [`Repository`]: its key set
//! (`keys/NNNNNN.json`), the data key of each set being written or read,
//! and the sealing of manifests. Plain repositories carry none of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{layout, RepoError, Repository, SetKind};
use crate::crypt::keys::{KeyError, KeySet, Unlocked};
use crate::crypt::{self, ChunkCipher, DataKey, Secrets};
use crate::storage::StorageError;

/// `pgtide.json`'s `encryption`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MarkerEncryption {
    pub scheme: String,
}

/// A manifest's `encryption`: its data key wrapped for epoch `epoch`, and
/// the MAC of the manifest under that key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetSeal {
    pub epoch: u32,
    /// The age file wrapping the data key, base64.
    pub key: String,
    /// HMAC-SHA256 of the canonical manifest (hex).
    pub mac: String,
}

/// The encryption state of an open repository.
pub struct RepoCrypt {
    keys: KeySet,
    /// The key sets before the current one, oldest first: a key removed
    /// since still opens the epochs it held then (docs/FORMAT.md).
    older: Vec<KeySet>,
    recipient: age::x25519::Recipient,
    unlocked: Mutex<Option<Unlocked>>,
    /// Data keys of the sets this process writes or has opened, by id.
    set_keys: Mutex<HashMap<String, DataKey>>,
}

impl std::fmt::Debug for RepoCrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoCrypt")
            .field("generation", &self.keys.generation)
            .field("current_epoch", &self.keys.current_epoch)
            .finish()
    }
}

impl RepoCrypt {
    pub fn new(keys: KeySet, older: Vec<KeySet>) -> Result<RepoCrypt, KeyError> {
        Ok(RepoCrypt {
            recipient: keys.current_recipient()?,
            keys,
            older,
            unlocked: Mutex::new(None),
            set_keys: Mutex::default(),
        })
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn current_epoch(&self) -> u32 {
        self.keys.current_epoch
    }

    pub fn recipient(&self) -> &age::x25519::Recipient {
        &self.recipient
    }

    pub fn unlocked(&self) -> Option<Unlocked> {
        self.unlocked.lock().expect("unlock state").clone()
    }

    /// The identity of `epoch`, or why there is none.
    pub fn identity(&self, epoch: u32, what: &str) -> Result<age::x25519::Identity, RepoError> {
        match self.unlocked.lock().expect("unlock state").as_ref() {
            None => Err(RepoError::Key(KeyError::Missing)),
            Some(u) => u
                .identity(epoch)
                .cloned()
                .ok_or_else(|| RepoError::EpochLocked {
                    what: what.to_string(),
                    epoch,
                }),
        }
    }
}

/// Key of key set `generation`.
fn keys_key(generation: u32) -> String {
    format!("{}{generation:06}.json", layout::KEYS)
}

impl Repository {
    /// True when the repository is encrypted.
    pub fn encrypted(&self) -> bool {
        self.crypt.is_some()
    }

    pub fn crypt(&self) -> Option<&Arc<RepoCrypt>> {
        self.crypt.as_ref()
    }

    /// Every key set, oldest first (the last is current).
    pub(super) async fn read_key_sets(&self) -> Result<Vec<KeySet>, RepoError> {
        let mut keys: Vec<String> = self
            .storage
            .list(layout::KEYS)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        keys.sort();
        if keys.is_empty() {
            return Err(RepoError::BadObject {
                key: layout::KEYS.into(),
                reason: "the repository is encrypted but holds no key set".into(),
            });
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let bytes = self.storage.get(&key).await?;
            out.push(
                serde_json::from_slice(&bytes).map_err(|e| RepoError::BadObject {
                    key,
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// Store the next key set (create-if-absent: two concurrent changes
    /// cannot both win).
    pub async fn write_key_set(&self, next: &KeySet) -> Result<(), RepoError> {
        let body = serde_json::to_vec_pretty(next).expect("key set serializes");
        match self
            .storage
            .put_if_absent(&keys_key(next.generation), Bytes::from(body))
            .await
        {
            Ok(()) => Ok(()),
            Err(StorageError::AlreadyExists { .. }) => Err(RepoError::Key(KeyError::Bad(
                "another key change was made at the same time: run the command again".into(),
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Open the repository's keys with `secrets`. On a plain repository,
    /// secrets given with a flag are an error (environment variables are
    /// ignored there); on an encrypted one, no secret leaves the repository
    /// locked, and what needs a key says so when it comes to it.
    pub fn unlock(&self, secrets: &Secrets) -> Result<(), RepoError> {
        let Some(c) = &self.crypt else {
            if secrets.explicit {
                return Err(RepoError::NotEncrypted {
                    location: self.location(),
                });
            }
            return Ok(());
        };
        if secrets.is_empty() {
            return Ok(());
        }
        // The current set first: its errors (a bad identity file) are the
        // ones to report; older sets add the epochs a key held before.
        let mut u = c.keys.unlock(secrets);
        for k in c.older.iter().rev() {
            match (&mut u, k.unlock(secrets)) {
                (Ok(u), Ok(more)) => u.merge(more),
                (Err(KeyError::NoMatch { .. }), Ok(more)) => u = Ok(more),
                _ => {}
            }
        }
        *c.unlocked.lock().expect("unlock state") = Some(u?);
        Ok(())
    }

    /// Like [`Repository::unlock`], but a key is required on an encrypted
    /// repository (commands that read contents).
    pub fn require_unlocked(&self, secrets: &Secrets) -> Result<(), RepoError> {
        self.unlock(secrets)?;
        match &self.crypt {
            Some(c) if c.unlocked().is_none() => Err(RepoError::Key(KeyError::Missing)),
            _ => Ok(()),
        }
    }

    /// The cipher for the chunks of a new set `id` (a fresh data key);
    /// `None` on a plain repository.
    pub fn new_set_cipher(&self, id: &str) -> Result<Option<ChunkCipher>, RepoError> {
        let Some(c) = &self.crypt else {
            return Ok(None);
        };
        let k = DataKey::generate().map_err(|e| RepoError::Key(KeyError::Bad(e.to_string())))?;
        let cipher = ChunkCipher::new(&k, id);
        c.set_keys
            .lock()
            .expect("set keys")
            .insert(id.to_string(), k);
        Ok(Some(cipher))
    }

    /// The cipher for reading set `id`, whose manifest was loaded (and
    /// authenticated) by this repository; `None` on a plain repository.
    pub fn set_cipher(&self, kind: SetKind, id: &str) -> Result<Option<ChunkCipher>, RepoError> {
        let Some(c) = &self.crypt else {
            return Ok(None);
        };
        if let Some(k) = c.set_keys.lock().expect("set keys").get(id) {
            return Ok(Some(ChunkCipher::new(k, id)));
        }
        if c.unlocked().is_none() {
            return Err(RepoError::Key(KeyError::Missing));
        }
        Err(RepoError::BadObject {
            key: layout::set_manifest(kind, id),
            reason: "read before its manifest was loaded".into(),
        })
    }

    /// Seal a manifest for writing: its data key wrapped for the current
    /// epoch, and its MAC.
    pub(super) fn seal_manifest(
        &self,
        kind: SetKind,
        id: &str,
        mut v: serde_json::Value,
    ) -> Result<serde_json::Value, RepoError> {
        let Some(c) = &self.crypt else {
            return Ok(v);
        };
        let k = c
            .set_keys
            .lock()
            .expect("set keys")
            .get(id)
            .cloned()
            .ok_or_else(|| RepoError::BadObject {
                key: layout::set_manifest(kind, id),
                reason: "no data key was made for this set".into(),
            })?;
        let wrapped = k
            .wrap(&c.recipient)
            .map_err(|e| RepoError::Key(KeyError::Bad(e.to_string())))?;
        v["encryption"] = serde_json::to_value(SetSeal {
            epoch: c.keys.current_epoch,
            key: crypt::b64(&wrapped),
            mac: String::new(),
        })
        .expect("seal serializes");
        let mac = k.manifest_mac(&crypt::canonical_manifest(&v));
        v["encryption"]["mac"] = mac.into();
        Ok(v)
    }

    /// Check a loaded manifest. Locked (no key given): nothing to check, the
    /// caller only lists. Unlocked: the data key is unwrapped and the MAC
    /// checked, and the key kept for [`Repository::set_cipher`].
    pub(super) fn open_manifest(&self, key: &str, id: &str, bytes: &[u8]) -> Result<(), RepoError> {
        let Some(c) = &self.crypt else {
            return Ok(());
        };
        if c.unlocked().is_none() {
            return Ok(());
        }
        let tampered = |reason: &str| RepoError::Tampered {
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|_| tampered("not JSON"))?;
        let seal: SetSeal = v
            .get("encryption")
            .cloned()
            .and_then(|e| serde_json::from_value(e).ok())
            .ok_or_else(|| tampered("the manifest of an encrypted repository carries no seal"))?;
        if v.get("id").and_then(|i| i.as_str()) != Some(id) {
            return Err(tampered("the manifest names another set"));
        }
        let identity = c.identity(seal.epoch, &format!("set {id}"))?;
        let wrapped =
            crypt::unb64(&seal.key).map_err(|_| tampered("the wrapped data key is not base64"))?;
        let k = DataKey::unwrap(&wrapped, &identity)
            .map_err(|_| tampered("its data key does not open with the epoch key it names"))?;
        k.verify_manifest(&crypt::canonical_manifest(&v), &seal.mac)
            .map_err(|_| tampered("the manifest's MAC does not match its contents"))?;
        c.set_keys
            .lock()
            .expect("set keys")
            .insert(id.to_string(), k);
        Ok(())
    }
}
