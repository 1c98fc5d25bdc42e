//! Client-side encryption of a repository: the composition of `ring`'s
//! AES-256-GCM, HKDF and HMAC with `age`'s key wrapping. No cryptographic
//! primitive is written here; this module only decides which key seals
//! what, with which nonce and which associated data (the design and its
//! threat model are in docs/FORMAT.md, "Encryption").
//!
//! - A **data key** ([`DataKey`], 32 random bytes) per dump, per backup and
//!   per WAL object. From it HKDF derives the AES-256-GCM key of its chunks
//!   (or of its one WAL frame) and the HMAC key of its manifest.
//! - The data key is **wrapped** with age for the repository's current
//!   **epoch recipient** (an X25519 public key), so writers need no secret.
//! - The epoch identities are wrapped for the users' keys (age recipients or
//!   a passphrase) in the key set (`keys.rs`); rotating users' keys rewrites
//!   only that.
//!
//! Owns: nonces and associated data. Must never: reuse a nonce under one key
//! (chunk nonces are their position in the set, unique by construction; a
//! WAL object's key seals one frame), log or print a key.

pub mod keys;
pub mod secrets;

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hkdf, hmac};

pub use keys::{KeySet, Unlocked};
pub use secrets::Secrets;

/// Bytes the AEAD adds to every sealed frame.
pub const TAG_LEN: usize = 16;

/// The scheme recorded in `pgtide.json`; readers refuse any other.
pub const SCHEME: &str = "age-x25519+aes-256-gcm";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// A sealed frame or a manifest does not authenticate: damaged, edited,
    /// moved, or sealed under another key.
    #[error("authentication failed ({0}): the object was damaged, edited or moved")]
    Auth(&'static str),
    #[error("cannot unwrap a data key: {0}")]
    Unwrap(String),
    #[error("cannot wrap a data key: {0}")]
    Wrap(String),
    #[error("the system's random number generator failed")]
    Random,
}

/// Fresh random bytes.
pub fn random<const N: usize>() -> Result<[u8; N], CryptError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CryptError::Random)?;
    Ok(b)
}

/// One dump's, backup's or WAL object's data key.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// HKDF output length for a 32-byte key.
struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl DataKey {
    pub fn generate() -> Result<DataKey, CryptError> {
        Ok(DataKey(random()?))
    }

    /// A subkey for one purpose (HKDF-SHA256, empty salt, `info` = purpose).
    fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&self.0);
        let info = [purpose];
        let okm = prk
            .expand(&info, Len32)
            .expect("32 bytes is a valid HKDF length");
        let mut out = [0u8; 32];
        okm.fill(&mut out).expect("32 bytes");
        out
    }

    fn aead(&self, purpose: &[u8]) -> LessSafeKey {
        let k = self.derive(purpose);
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).expect("32-byte AES key"))
    }

    /// Wrap for `recipient` (an age X25519 recipient): an age file.
    pub fn wrap(&self, recipient: &age::x25519::Recipient) -> Result<Vec<u8>, CryptError> {
        age::encrypt(recipient, &self.0).map_err(|e| CryptError::Wrap(e.to_string()))
    }

    /// Unwrap an age file made by [`DataKey::wrap`].
    pub fn unwrap(wrapped: &[u8], identity: &age::x25519::Identity) -> Result<DataKey, CryptError> {
        let raw = age::decrypt(identity, wrapped).map_err(|e| CryptError::Unwrap(e.to_string()))?;
        let key: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| CryptError::Unwrap(format!("{} bytes, not 32", raw.len())))?;
        Ok(DataKey(key))
    }

    /// The HMAC-SHA256 of a manifest's canonical bytes.
    pub fn manifest_mac(&self, canonical: &[u8]) -> String {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"pgtide manifest mac v1"));
        hex(hmac::sign(&k, canonical).as_ref())
    }

    /// Check a manifest's MAC (constant time).
    pub fn verify_manifest(&self, canonical: &[u8], mac: &str) -> Result<(), CryptError> {
        let k = hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"pgtide manifest mac v1"));
        let tag = unhex(mac).ok_or(CryptError::Auth("manifest MAC is not hex"))?;
        hmac::verify(&k, canonical, &tag).map_err(|_| CryptError::Auth("manifest MAC"))
    }
}

/// Seals and opens the chunks of one dump or backup. The nonce is the
/// chunk's number in its set (a per-set counter from 1, recorded in the
/// manifest), which the writer never gives twice; the associated data binds
/// the frame to its set id, its number and its raw length, so a frame
/// moved to another place, reordered, truncated or taken from another set
/// fails to open (the manifest, authenticated, says which number belongs
/// where).
#[derive(Clone)]
pub struct ChunkCipher {
    key: std::sync::Arc<LessSafeKey>,
    set_id: String,
}

impl fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkCipher({})", self.set_id)
    }
}

impl ChunkCipher {
    pub fn new(key: &DataKey, set_id: &str) -> ChunkCipher {
        ChunkCipher {
            key: std::sync::Arc::new(key.aead(b"pgtide chunk v1")),
            set_id: set_id.to_string(),
        }
    }

    fn nonce(seq: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&seq.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, seq: u64, raw_len: u64) -> Vec<u8> {
        let mut a = Vec::with_capacity(self.set_id.len() + 36);
        a.extend_from_slice(b"pgtide chunk v1\0");
        a.extend_from_slice(self.set_id.as_bytes());
        a.push(0);
        a.extend_from_slice(&seq.to_be_bytes());
        a.extend_from_slice(&raw_len.to_be_bytes());
        a
    }

    /// `frame` (a compressed chunk) sealed as chunk `seq`: frame ‖ tag.
    pub fn seal(&self, seq: u64, raw_len: u64, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame.len() + TAG_LEN);
        out.extend_from_slice(frame);
        self.key
            .seal_in_place_append_tag(
                Self::nonce(seq),
                Aad::from(self.aad(seq, raw_len)),
                &mut out,
            )
            .expect("AES-GCM sealing of a bounded chunk");
        out
    }

    /// The frame of sealed chunk `seq`, authenticated.
    pub fn open(&self, seq: u64, raw_len: u64, sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut buf = sealed.to_vec();
        let n = self
            .key
            .open_in_place(
                Self::nonce(seq),
                Aad::from(self.aad(seq, raw_len)),
                &mut buf,
            )
            .map_err(|_| CryptError::Auth("chunk"))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

/// Seals and opens the one frame of a WAL object under that object's own
/// data key (so the nonce is constant), bound to the object's key in the
/// repository: a segment stored under another name fails to open.
pub fn seal_object(key: &DataKey, object_key: &str, frame: &[u8]) -> Vec<u8> {
    let k = key.aead(b"pgtide wal object v1");
    let mut out = frame.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0u8; 12]),
        Aad::from(object_aad(object_key)),
        &mut out,
    )
    .expect("AES-GCM sealing of a bounded frame");
    out
}

pub fn open_object(key: &DataKey, object_key: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
    let k = key.aead(b"pgtide wal object v1");
    let mut buf = sealed.to_vec();
    let n = k
        .open_in_place(
            Nonce::assume_unique_for_key([0u8; 12]),
            Aad::from(object_aad(object_key)),
            &mut buf,
        )
        .map_err(|_| CryptError::Auth("WAL object"))?
        .len();
    buf.truncate(n);
    Ok(buf)
}

fn object_aad(object_key: &str) -> Vec<u8> {
    let mut a = b"pgtide wal object v1\0".to_vec();
    a.extend_from_slice(object_key.as_bytes());
    a
}

/// SHA-256 of `data` (what an encrypted WAL object records of its plaintext,
/// so a writer without the key can tell "the same bytes again").
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().try_into().expect("32 bytes")
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn unb64(s: &str) -> Result<Vec<u8>, CryptError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| CryptError::Unwrap(format!("bad base64: {e}")))
}

/// The canonical bytes of a manifest for its MAC: the JSON value with the
/// MAC field emptied, keys sorted (serde_json's map is ordered by key), no
/// whitespace. Writers and readers build it from the parsed value, so the
/// formatting of the stored object does not matter.
pub fn canonical_manifest(v: &serde_json::Value) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(e) = v.get_mut("encryption").and_then(|e| e.as_object_mut()) {
        e.insert("mac".into(), serde_json::Value::String(String::new()));
    }
    serde_json::to_vec(&v).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_open_only_as_their_number_in_their_set() {
        let k = DataKey::generate().unwrap();
        let c = ChunkCipher::new(&k, "20261206-120000F");
        let sealed = c.seal(3, 10, b"frame data");
        assert_eq!(sealed.len(), 10 + TAG_LEN);
        assert_eq!(c.open(3, 10, &sealed).unwrap(), b"frame data");
        assert!(c.open(4, 10, &sealed).is_err(), "another chunk's place");
        assert!(c.open(3, 11, &sealed).is_err(), "other raw length");
        let other_set = ChunkCipher::new(&k, "20261206-120001F");
        assert!(other_set.open(3, 10, &sealed).is_err(), "other set");
        let other_key = ChunkCipher::new(&DataKey::generate().unwrap(), "20261206-120000F");
        assert!(other_key.open(3, 10, &sealed).is_err(), "other key");
        let mut flipped = sealed.clone();
        flipped[2] ^= 1;
        assert!(c.open(3, 10, &flipped).is_err(), "flipped byte");
        assert!(c.open(3, 10, &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn data_keys_wrap_for_a_recipient_only() {
        let id = age::x25519::Identity::generate();
        let k = DataKey::generate().unwrap();
        let w = k.wrap(&id.to_public()).unwrap();
        let back = DataKey::unwrap(&w, &id).unwrap();
        assert_eq!(back.0, k.0);
        assert!(DataKey::unwrap(&w, &age::x25519::Identity::generate()).is_err());
    }

    #[test]
    fn manifests_are_authenticated_whatever_their_formatting() {
        let k = DataKey::generate().unwrap();
        let mut v = serde_json::json!({"id": "x", "rows": 5, "encryption": {"epoch": 1, "key": "k", "mac": ""}});
        let mac = k.manifest_mac(&canonical_manifest(&v));
        v["encryption"]["mac"] = mac.clone().into();
        let stored = serde_json::to_vec_pretty(&v).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        k.verify_manifest(&canonical_manifest(&parsed), &mac)
            .unwrap();
        let mut edited = parsed.clone();
        edited["rows"] = 6.into();
        assert!(k
            .verify_manifest(&canonical_manifest(&edited), &mac)
            .is_err());
        let other = DataKey::generate().unwrap();
        assert!(other
            .verify_manifest(&canonical_manifest(&parsed), &mac)
            .is_err());
    }

    #[test]
    fn wal_objects_are_bound_to_their_name() {
        let k = DataKey::generate().unwrap();
        let s = seal_object(&k, "wal/00000001/000000010000000000000003", b"wal bytes");
        assert_eq!(
            open_object(&k, "wal/00000001/000000010000000000000003", &s).unwrap(),
            b"wal bytes"
        );
        assert!(open_object(&k, "wal/00000001/000000010000000000000004", &s).is_err());
    }
}
