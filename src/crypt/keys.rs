//! The key set of an encrypted repository (`keys/NNNNNN.json`, the highest
//! number is current): the **epochs** (X25519 key pairs whose public halves
//! writers wrap data keys for) and the **users' keys** (age recipients, or a
//! passphrase) each holding the epoch identities it may open, wrapped with
//! age.
//!
//! - Adding a key wraps the epochs its adder can open for the new key.
//! - Removing a key starts a new epoch, wrapped only for the remaining keys:
//!   what is written from then on is out of the removed key's reach; what
//!   was written before stays readable to it (it may have kept the epoch
//!   identities it could open), which docs/FORMAT.md says.
//!
//! No data object is rewritten by either; only a new key set is written.

use std::collections::BTreeMap;
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{b64, unb64, Secrets};

/// scrypt work factor (log2 N) of passphrase wraps. `wal fetch` opens the
/// key set once per segment PostgreSQL asks for, so this stays well under
/// age's interactive default (about 0.1 s here, against 1 s).
const SCRYPT_LOG_N: u8 = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Bad(String),
    #[error("{given} opens no key of this repository (hint: the identity or passphrase the repository was created or last rotated with; pgtide key list shows its keys)")]
    NoMatch { given: String },
    #[error("the repository is encrypted and no key was given: use --identity FILE (or PGTIDE_IDENTITY_FILE) or --passphrase-file FILE (or PGTIDE_PASSPHRASE)")]
    Missing,
}

/// One epoch: the public half writers use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Epoch {
    pub epoch: u32,
    pub recipient: String,
    pub created_at: DateTime<Utc>,
}

/// A user's key and the epoch identities wrapped for it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserKey {
    /// `"recipient"` (an age X25519 public key) or `"passphrase"`.
    pub kind: String,
    /// The age recipient (`age1…`); absent for a passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    pub added_at: DateTime<Utc>,
    /// The epochs its wraps hold.
    pub epochs: Vec<u32>,
    /// age files (base64), each holding a JSON object epoch → identity.
    pub wraps: Vec<String>,
}

impl UserKey {
    /// How `key list` and messages name it.
    pub fn name(&self) -> String {
        match &self.recipient {
            Some(r) => r.clone(),
            None => "passphrase".into(),
        }
    }
}

/// The current key set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeySet {
    pub generation: u32,
    pub created_at: DateTime<Utc>,
    pub current_epoch: u32,
    pub epochs: Vec<Epoch>,
    pub keys: Vec<UserKey>,
}

/// What a key to add or remove is.
#[derive(Debug, Clone)]
pub enum KeySpec {
    Recipient(String),
    Passphrase(SecretString),
}

/// The epoch identities a reader could open.
#[derive(Clone)]
pub struct Unlocked {
    ids: BTreeMap<u32, age::x25519::Identity>,
}

impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Unlocked(epochs {:?})",
            self.ids.keys().collect::<Vec<_>>()
        )
    }
}

impl Unlocked {
    pub fn identity(&self, epoch: u32) -> Option<&age::x25519::Identity> {
        self.ids.get(&epoch)
    }

    pub fn epochs(&self) -> Vec<u32> {
        self.ids.keys().copied().collect()
    }

    /// Add the epochs `other` opened.
    pub fn merge(&mut self, other: Unlocked) {
        for (e, id) in other.ids {
            self.ids.entry(e).or_insert(id);
        }
    }
}

/// Parse an age recipient, with a one-line error.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, KeyError> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| {
        KeyError::Bad(format!(
            "{s:?} is not an age recipient (age1…): {e} (hint: pgtide key generate prints one)"
        ))
    })
}

fn wrap_for(
    spec: &KeySpec,
    ids: &BTreeMap<u32, age::x25519::Identity>,
) -> Result<String, KeyError> {
    let body: BTreeMap<String, String> = ids
        .iter()
        .map(|(e, id)| (e.to_string(), id.to_string().expose_secret().to_string()))
        .collect();
    let plain = serde_json::to_vec(&body).expect("map serializes");
    let wrapped = match spec {
        KeySpec::Recipient(r) => age::encrypt(&parse_recipient(r)?, &plain),
        KeySpec::Passphrase(p) => {
            let mut r = age::scrypt::Recipient::new(p.clone());
            r.set_work_factor(SCRYPT_LOG_N);
            age::encrypt(&r, &plain)
        }
    }
    .map_err(|e| KeyError::Bad(format!("cannot wrap the epoch keys: {e}")))?;
    Ok(b64(&wrapped))
}

fn user_key(
    spec: &KeySpec,
    ids: &BTreeMap<u32, age::x25519::Identity>,
) -> Result<UserKey, KeyError> {
    Ok(UserKey {
        kind: match spec {
            KeySpec::Recipient(_) => "recipient".into(),
            KeySpec::Passphrase(_) => "passphrase".into(),
        },
        recipient: match spec {
            KeySpec::Recipient(r) => Some(parse_recipient(r)?.to_string()),
            KeySpec::Passphrase(_) => None,
        },
        added_at: Utc::now(),
        epochs: ids.keys().copied().collect(),
        wraps: vec![wrap_for(spec, ids)?],
    })
}

fn new_epoch(n: u32) -> (Epoch, age::x25519::Identity) {
    let id = age::x25519::Identity::generate();
    (
        Epoch {
            epoch: n,
            recipient: id.to_public().to_string(),
            created_at: Utc::now(),
        },
        id,
    )
}

impl KeySet {
    /// A new key set with one epoch, for these keys.
    pub fn create(specs: &[KeySpec]) -> Result<KeySet, KeyError> {
        if specs.is_empty() {
            return Err(KeyError::Bad(
                "an encrypted repository needs at least one key".into(),
            ));
        }
        let (epoch, id) = new_epoch(1);
        let ids = BTreeMap::from([(1, id)]);
        let mut keys = Vec::new();
        for s in specs {
            let k = user_key(s, &ids)?;
            if keys.iter().any(|o: &UserKey| o.name() == k.name()) {
                return Err(KeyError::Bad(format!("{} is given twice", k.name())));
            }
            keys.push(k);
        }
        Ok(KeySet {
            generation: 1,
            created_at: Utc::now(),
            current_epoch: 1,
            epochs: vec![epoch],
            keys,
        })
    }

    /// The recipient writers wrap data keys for.
    pub fn current_recipient(&self) -> Result<age::x25519::Recipient, KeyError> {
        let e = self
            .epochs
            .iter()
            .find(|e| e.epoch == self.current_epoch)
            .ok_or_else(|| {
                KeyError::Bad(format!(
                    "the key set names epoch {} as current but does not hold it",
                    self.current_epoch
                ))
            })?;
        parse_recipient(&e.recipient)
    }

    /// Open every epoch `secrets` can: each user key whose wraps one of the
    /// identities (or the passphrase) opens.
    pub fn unlock(&self, secrets: &Secrets) -> Result<Unlocked, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Missing);
        }
        let identities = secrets.identities().map_err(KeyError::Bad)?;
        let mut ids = BTreeMap::new();
        for k in &self.keys {
            for w in &k.wraps {
                let bytes = unb64(w).map_err(|e| KeyError::Bad(format!("key set: {e}")))?;
                let plain = if k.kind == "passphrase" {
                    let Some(p) = secrets.passphrase() else {
                        continue;
                    };
                    let mut id = age::scrypt::Identity::new(p.clone());
                    id.set_max_work_factor(22);
                    age::decrypt(&id, &bytes).ok()
                } else {
                    decrypt_any(&identities, &bytes)
                };
                let Some(plain) = plain else { continue };
                let map: BTreeMap<String, String> =
                    serde_json::from_slice(&plain).map_err(|e| {
                        KeyError::Bad(format!("key set: a wrap holds no epoch keys: {e}"))
                    })?;
                for (e, s) in map {
                    let e: u32 = e
                        .parse()
                        .map_err(|_| KeyError::Bad(format!("key set: bad epoch {e:?}")))?;
                    let id = age::x25519::Identity::from_str(&s)
                        .map_err(|e| KeyError::Bad(format!("key set: bad epoch key: {e}")))?;
                    ids.insert(e, id);
                }
            }
        }
        if ids.is_empty() {
            return Err(KeyError::NoMatch {
                given: secrets.describe(),
            });
        }
        Ok(Unlocked { ids })
    }

    fn find(&self, spec: &KeySpec) -> Option<usize> {
        self.keys.iter().position(|k| match spec {
            KeySpec::Recipient(r) => k.recipient.as_deref() == Some(r.trim()),
            KeySpec::Passphrase(_) => k.kind == "passphrase",
        })
    }

    /// The next key set, with `spec` added: it can open every epoch
    /// `unlocked` holds.
    pub fn add(&self, unlocked: &Unlocked, spec: &KeySpec) -> Result<KeySet, KeyError> {
        if let KeySpec::Recipient(r) = spec {
            parse_recipient(r)?;
        }
        if let Some(i) = self.find(spec) {
            return Err(KeyError::Bad(match spec {
                KeySpec::Recipient(_) => format!("{} is already a key of this repository", self.keys[i].name()),
                KeySpec::Passphrase(_) => "the repository already has a passphrase: remove it first (pgtide key remove --passphrase)".into(),
            }));
        }
        let mut next = self.clone();
        next.generation += 1;
        next.created_at = Utc::now();
        next.keys.push(user_key(spec, &unlocked.ids)?);
        Ok(next)
    }

    /// The next key set, without `spec`, and with a new current epoch that
    /// only the remaining keys can open. A remaining passphrase needs the
    /// passphrase itself (`passphrase`, checked against its wraps) for the
    /// new epoch to be wrapped for it.
    pub fn remove(
        &self,
        spec: &KeySpec,
        passphrase: Option<&SecretString>,
    ) -> Result<KeySet, KeyError> {
        let Some(i) = self.find(spec) else {
            return Err(KeyError::Bad(match spec {
                KeySpec::Recipient(r) => {
                    format!("{r} is not a key of this repository (pgtide key list shows them)")
                }
                KeySpec::Passphrase(_) => "the repository has no passphrase".into(),
            }));
        };
        if self.keys.len() == 1 {
            return Err(KeyError::Bad(
                "that is the repository's only key: add another first (nothing could read the repository after)".into(),
            ));
        }
        let mut next = self.clone();
        next.keys.remove(i);
        let n = self.epochs.iter().map(|e| e.epoch).max().unwrap_or(0) + 1;
        let (epoch, id) = new_epoch(n);
        let ids = BTreeMap::from([(n, id)]);
        for k in &mut next.keys {
            let spec = match &k.recipient {
                Some(r) => KeySpec::Recipient(r.clone()),
                None => {
                    let p = passphrase.ok_or_else(|| KeyError::Bad(
                        "the repository also has a passphrase: give it (--passphrase-file or PGTIDE_PASSPHRASE) so that the new epoch is wrapped for it too".into(),
                    ))?;
                    if !opens(k, p) {
                        return Err(KeyError::Bad(
                            "the passphrase given is not the repository's passphrase".into(),
                        ));
                    }
                    KeySpec::Passphrase(p.clone())
                }
            };
            k.wraps.push(wrap_for(&spec, &ids)?);
            k.epochs.push(n);
        }
        next.generation += 1;
        next.created_at = Utc::now();
        next.current_epoch = n;
        next.epochs.push(epoch);
        Ok(next)
    }
}

/// `bytes` (an age file) opened by any of `identities`.
fn decrypt_any(identities: &[Box<dyn age::Identity>], bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    if identities.is_empty() {
        return None;
    }
    let d = age::Decryptor::new(bytes).ok()?;
    if d.is_scrypt() {
        return None;
    }
    let mut r = d.decrypt(identities.iter().map(|i| i.as_ref())).ok()?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).ok()?;
    Some(out)
}

/// True when `p` opens one of passphrase key `k`'s wraps.
fn opens(k: &UserKey, p: &SecretString) -> bool {
    let mut id = age::scrypt::Identity::new(p.clone());
    id.set_max_work_factor(22);
    k.wraps
        .iter()
        .any(|w| unb64(w).ok().is_some_and(|b| age::decrypt(&id, &b).is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets_for(id: &age::x25519::Identity) -> (tempfile::TempDir, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        std::fs::write(&path, format!("{}\n", id.to_string().expose_secret())).unwrap();
        let s = Secrets::gather(Some(&path), None).unwrap();
        (dir, s)
    }

    #[test]
    fn rotation_keeps_old_epochs_and_shuts_removed_keys_out_of_new_ones() {
        let (a, b) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let ks = KeySet::create(&[KeySpec::Recipient(a.to_public().to_string())]).unwrap();
        let (_da, sa) = secrets_for(&a);
        let (_db, sb) = secrets_for(&b);
        let ua = ks.unlock(&sa).unwrap();
        assert_eq!(ua.epochs(), vec![1]);
        assert!(matches!(ks.unlock(&sb), Err(KeyError::NoMatch { .. })));
        assert!(matches!(
            ks.unlock(&Secrets::default()),
            Err(KeyError::Missing)
        ));

        let ks2 = ks
            .add(&ua, &KeySpec::Recipient(b.to_public().to_string()))
            .unwrap();
        assert_eq!(ks2.generation, 2);
        assert_eq!(ks2.current_epoch, 1, "adding a key starts no epoch");
        assert_eq!(ks2.unlock(&sb).unwrap().epochs(), vec![1]);
        assert!(ks2
            .add(&ua, &KeySpec::Recipient(b.to_public().to_string()))
            .is_err());

        let ks3 = ks2
            .remove(&KeySpec::Recipient(a.to_public().to_string()), None)
            .unwrap();
        assert_eq!(ks3.current_epoch, 2);
        assert_eq!(ks3.unlock(&sb).unwrap().epochs(), vec![1, 2]);
        assert!(
            ks3.unlock(&sa).is_err(),
            "a removed key opens nothing of the new set"
        );
        assert_eq!(
            ks3.current_recipient().unwrap().to_string(),
            ks3.epochs[1].recipient
        );
        assert!(
            ks3.remove(&KeySpec::Recipient(b.to_public().to_string()), None)
                .is_err(),
            "last key"
        );
    }

    #[test]
    fn passphrases_wrap_and_must_be_given_to_rotate_around_them() {
        let p = SecretString::from("correct horse".to_string());
        let a = age::x25519::Identity::generate();
        let ks = KeySet::create(&[
            KeySpec::Passphrase(p.clone()),
            KeySpec::Recipient(a.to_public().to_string()),
        ])
        .unwrap();
        assert_eq!(
            ks.unlock(&Secrets::with_passphrase(p.clone()))
                .unwrap()
                .epochs(),
            vec![1]
        );
        let wrong = SecretString::from("wrong".to_string());
        assert!(ks.unlock(&Secrets::with_passphrase(wrong.clone())).is_err());
        let spec = KeySpec::Recipient(a.to_public().to_string());
        assert!(ks.remove(&spec, None).is_err());
        assert!(ks.remove(&spec, Some(&wrong)).is_err());
        let ks2 = ks.remove(&spec, Some(&p)).unwrap();
        assert_eq!(
            ks2.unlock(&Secrets::with_passphrase(p)).unwrap().epochs(),
            vec![1, 2]
        );
    }

    #[test]
    fn bad_recipients_are_refused_in_one_line() {
        let e = KeySet::create(&[KeySpec::Recipient("age1nope".into())]).unwrap_err();
        assert!(e.to_string().contains("not an age recipient"), "{e}");
        assert!(KeySet::create(&[]).is_err());
    }
}
