//! The sets of a repository (dumps and backups) as a whole: listing them
//! (complete, incomplete, being deleted), resolving `latest` and ids, and
//! crash-safe deletion (`deleting.json` first, see the module above).

use super::*;

impl Repository {
    /// Every set of `kind` with objects, by id, from one listing.
    async fn sets(
        &self,
        kind: SetKind,
    ) -> Result<std::collections::BTreeMap<String, SetObjects>, RepoError> {
        let mut map: std::collections::BTreeMap<String, SetObjects> = Default::default();
        for o in self.storage.list(kind.prefix()).await? {
            if let Some(id) = layout::set_id_of(kind, &o.key) {
                let e = map.entry(id.to_string()).or_default();
                e.manifest |= o.key == layout::set_manifest(kind, id);
                e.deleting |= o.key == layout::set_deleting(kind, id);
                e.objects += 1;
                e.bytes += o.size;
            }
        }
        Ok(map)
    }

    /// Ids of complete sets of `kind` (a manifest, and no deletion under
    /// way), oldest first.
    pub async fn ids(&self, kind: SetKind) -> Result<Vec<String>, RepoError> {
        Ok(self
            .sets(kind)
            .await?
            .into_iter()
            .filter(|(_, s)| s.manifest && !s.deleting)
            .map(|(id, _)| id)
            .collect())
    }

    pub async fn dump_ids(&self) -> Result<Vec<String>, RepoError> {
        self.ids(SetKind::Dump).await
    }

    /// Every complete dump, oldest first.
    /// Every dump this version can read. A manifest of a newer format
    /// (written by a newer pgtide) is left out with a warning rather than
    /// failing the whole listing; loading it by id still refuses it.
    pub async fn list_dumps(&self) -> Result<Vec<DumpManifest>, RepoError> {
        let mut out = Vec::new();
        for id in self.dump_ids().await? {
            match self.load_dump(&id).await {
                Ok(m) => out.push(m),
                Err(e @ RepoError::FormatTooNew { .. }) => {
                    // Handled here: the other dumps are still listed.
                    tracing::warn!("skipping dump {id}: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Sets of `kind` that have objects but no manifest (and are not being
    /// deleted).
    pub async fn incomplete(&self, kind: SetKind) -> Result<Vec<IncompleteDump>, RepoError> {
        Ok(self
            .sets(kind)
            .await?
            .into_iter()
            .filter(|(_, s)| !s.manifest && !s.deleting)
            .map(|(id, s)| IncompleteDump {
                id,
                objects: s.objects,
                bytes: s.bytes,
            })
            .collect())
    }

    /// Sets of `kind` whose deletion started and did not finish.
    pub async fn deleting(&self, kind: SetKind) -> Result<Vec<IncompleteDump>, RepoError> {
        Ok(self
            .sets(kind)
            .await?
            .into_iter()
            .filter(|(_, s)| s.deleting)
            .map(|(id, s)| IncompleteDump {
                id,
                objects: s.objects,
                bytes: s.bytes,
            })
            .collect())
    }

    /// Finish every interrupted deletion of either kind.
    pub async fn finish_deletions(&self) -> Result<Vec<FinishedDeletion>, RepoError> {
        let mut out = Vec::new();
        for kind in [SetKind::Backup, SetKind::Dump] {
            for s in self.deleting(kind).await? {
                let bytes_freed = match self.delete(kind, &s.id).await {
                    Ok(b) => b,
                    // Finished meanwhile by someone else.
                    Err(RepoError::NoSuch { .. }) => 0,
                    // Handled here: tried again by the next run.
                    Err(e @ RepoError::Retained { .. }) => {
                        tracing::warn!("cannot finish the deletion yet: {e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                out.push(FinishedDeletion {
                    id: s.id,
                    objects: s.objects,
                    bytes_freed,
                });
            }
        }
        Ok(out)
    }

    pub async fn incomplete_dumps(&self) -> Result<Vec<IncompleteDump>, RepoError> {
        self.incomplete(SetKind::Dump).await
    }

    /// `latest` → the newest complete set of `kind`; otherwise the id as given.
    pub async fn resolve(&self, kind: SetKind, id: &str) -> Result<String, RepoError> {
        if id == "latest" {
            return self.ids(kind).await?.pop().ok_or_else(|| RepoError::Empty {
                kind: kind.noun(),
                location: self.location(),
            });
        }
        if !layout::valid_id(id) || SetKind::of_id(id) != Some(kind) {
            return Err(RepoError::BadId {
                id: id.into(),
                kind: kind.noun(),
            });
        }
        Ok(id.to_string())
    }

    /// `latest` → the newest complete dump or backup; otherwise the id.
    pub async fn resolve_any(&self, id: &str) -> Result<String, RepoError> {
        if id != "latest" {
            return Ok(id.to_string());
        }
        let mut all = self.ids(SetKind::Dump).await?;
        all.extend(self.ids(SetKind::Backup).await?);
        // Ids start with their UTC start time.
        all.sort_by(|a, b| a[..15].cmp(&b[..15]).then(a.cmp(b)));
        all.pop().ok_or_else(|| RepoError::Empty {
            kind: "dump or backup",
            location: self.location(),
        })
    }

    pub async fn resolve_dump(&self, id: &str) -> Result<String, RepoError> {
        self.resolve(SetKind::Dump, id).await
    }

    /// Delete a set, crash-safe: the `deleting` marker first (from then on
    /// the set is neither listed nor loaded), then the manifest, then every
    /// other object, then the marker. Interrupted anywhere, a second call
    /// (or [`Repository::finish_deletions`]) finishes it. Returns the bytes
    /// freed.
    pub async fn delete(&self, kind: SetKind, id: &str) -> Result<u64, RepoError> {
        if !layout::valid_id(id) || SetKind::of_id(id) != Some(kind) {
            return Err(RepoError::BadId {
                id: id.into(),
                kind: kind.noun(),
            });
        }
        let objects = self.storage.list(&layout::set_prefix(kind, id)).await?;
        if objects.is_empty() {
            return Err(RepoError::NoSuch {
                kind: kind.noun(),
                id: id.into(),
                location: self.location(),
            });
        }
        let bytes = objects.iter().map(|o| o.size).sum();
        let marker = layout::set_deleting(kind, id);
        let keys: Vec<String> = objects
            .into_iter()
            .map(|o| o.key)
            .filter(|k| *k != marker)
            .collect();
        // Object Lock: nothing is touched while any object is retained, so a
        // set is never left half-deleted and hidden by its marker.
        let retained = |until| RepoError::Retained {
            kind: kind.noun(),
            id: id.into(),
            until,
        };
        let now = Utc::now();
        if let Some(until) = self.retained_until_of(&keys).await?.filter(|t| *t > now) {
            return Err(retained(until));
        }
        let body = serde_json::to_vec_pretty(&DeletingMarker {
            deleting_since: Utc::now(),
            pgtide_version: env!("CARGO_PKG_VERSION").into(),
        })
        .expect("marker serializes");
        // Without retention: it is removed at the end.
        match self.unretained.put_if_absent(&marker, body.into()).await {
            // Already there: a deletion that was interrupted, resumed now.
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        match self
            .storage
            .delete_many(&[layout::set_manifest(kind, id)])
            .await
        {
            Ok(()) => {}
            // The store's clock is behind ours: the set stays whole and
            // listed, without the marker.
            Err(StorageError::Retained { until, .. }) => {
                let _ = self.storage.delete_many(&[marker]).await;
                return Err(retained(until.unwrap_or(now)));
            }
            Err(e) => return Err(e.into()),
        }
        match self.storage.delete_many(&keys).await {
            Ok(()) => {}
            Err(StorageError::Retained { until, .. }) => {
                return Err(retained(until.unwrap_or(now)))
            }
            Err(e) => return Err(e.into()),
        }
        self.storage.delete_many(&[marker]).await?;
        Ok(bytes)
    }

    /// Remove everything of a failed or interrupted set, in one sweep: the
    /// job has settled its packs first (`pipeline::PackSet::settle`), so
    /// nothing of the set appears after it.
    pub async fn purge(&self, kind: SetKind, id: &str) {
        match self.delete(kind, id).await {
            Ok(_) | Err(RepoError::NoSuch { .. }) => {}
            Err(RepoError::Retained { until, .. }) => tracing::warn!(
                "the incomplete {} {id} stays under Object Lock retention until {}: pgtide delete {id} removes it then",
                kind.noun(),
                until.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            // The set stays listed as incomplete; `delete` removes it later.
            Err(e) => tracing::warn!("could not remove the incomplete {} {id}: {e}", kind.noun()),
        }
    }

    pub async fn delete_dump(&self, id: &str) -> Result<u64, RepoError> {
        self.delete(SetKind::Dump, id).await
    }
}
