//! `--object-lock` on Azure (issue 14): version-level immutability, against
//! Azurite. Azurite 3.x implements no immutability: its Get Container
//! Properties answers `x-ms-has-immutability-policy` and
//! `x-ms-has-legal-hold` (false) but no
//! `x-ms-immutable-storage-with-versioning-enabled`, it takes the policy
//! headers of Put Blob and Put Block List and keeps nothing, and answers
//! 501 to Set Blob Immutability Policy. What that lets these tests prove:
//!
//! - `init --object-lock` is refused with one line naming the container
//!   (exit 4), and writes nothing; `init` without it then works.
//! - At the storage level, a retention handle's `put` goes through (the
//!   policy is ignored) and `retained_until` reads back that no policy was
//!   kept; its block writer notices the missing policy, tries to set it,
//!   is refused (501: one line, `RetentionUnsupported`), and leaves no blob
//!   behind; its `delete_many` (List Blobs with `include=versions`, then
//!   Delete Blob) removes the keys asked and only them.
//!
//! What they cannot prove (no emulator has it): that Azure keeps the
//! policy, refuses the delete of a version under it
//! (`BlobImmutableDueToPolicy`, mapped to `Retained` by unit tests in
//! `src/storage/azure/retention.rs`), and deletes previous versions.

use bytes::Bytes;

use crate::harness::cli::pgtide;
use crate::harness::emulators::Emulator;
use pgtide::storage::{self, Retention, RetentionMode, StorageError};

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

#[test]
fn object_lock_init_on_azurite_is_refused_and_writes_nothing() {
    let place = Emulator::azurite().fresh_blocking();
    let out = pgtide(&["init", "--repo", &place.url, "--object-lock", "14d"]);
    out.assert_one_line_error(4, "");
    assert_eq!(
        out.error_line(),
        Some(
            format!(
                "error: Object Lock retention is not available on az://{0}/prefix: the store does \
                 not report version-level immutability for container {0} (no \
                 x-ms-immutable-storage-with-versioning-enabled in its properties; emulators such \
                 as Azurite do not implement immutability)",
                place.name
            )
            .as_str()
        ),
        "{out}"
    );
    let s = block(storage::open(&place.url)).expect("open");
    assert_eq!(block(s.list("")).unwrap(), vec![], "init wrote something");

    // The same container without --object-lock.
    pgtide(&["init", "--repo", &place.url]).assert_ok();
    let keys: Vec<String> = block(s.list(""))
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(keys.contains(&"pgtide.json".to_string()), "{keys:?}");
}

#[test]
fn object_lock_azure_storage_handle_on_azurite() {
    let place = Emulator::azurite().fresh_blocking();
    block(async {
        let url = format!("{}?block_size=1MiB", place.url);
        let plain = storage::open(&url).await.expect("open");
        let e = plain.check_retention().await.unwrap_err();
        assert!(
            matches!(e, StorageError::RetentionUnsupported { .. }),
            "{e:?}"
        );
        let locked = plain
            .with_retention(Retention {
                mode: RetentionMode::Compliance,
                period: std::time::Duration::from_secs(3600),
            })
            .expect("with_retention");
        assert!(plain.without_retention().is_none());
        assert!(locked.without_retention().is_some());

        // Put Blob with the policy headers: taken, and nothing kept.
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            locked
                .put(k, Bytes::from(format!("data of {k}")))
                .await
                .unwrap_or_else(|e| panic!("put {k}: {e}"));
        }
        assert_eq!(locked.retained_until("a/1").await.unwrap(), None);
        assert!(locked
            .retained_until("a/9")
            .await
            .unwrap_err()
            .is_not_found());

        // Put Block List: the writer checks, and is refused in one line.
        let mut w = locked.writer("big").await.expect("writer");
        w.write(Bytes::from(vec![7u8; 1536 * 1024])).await.unwrap();
        let e = w.finish().await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Object Lock retention is not available on az://{}/prefix: the store does not \
                 implement immutability policies (HTTP 501 APINotImplemented)",
                place.name
            )
        );
        assert!(locked.size("big").await.unwrap_err().is_not_found());

        // Deletes by version: the keys asked (and a missing one), only them.
        let keys = ["a/1", "a/3", "a/missing", "b/1"].map(String::from);
        locked.delete_many(&keys).await.expect("delete_many");
        let left: Vec<String> = locked
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(left, ["a/2"]);
        // The handle without retention deletes the same way.
        storage::unretained(&locked)
            .delete_many(&["a/2".to_string()])
            .await
            .expect("delete_many");
        assert!(locked.list("").await.unwrap().is_empty());
    });
}
