//! Which entries of the schema archive's table of contents a restore with
//! `--table` / `--exclude-table` runs, written as a list for
//! `pg_restore --use-list` (which reads only each line's leading dump id).
//!
//! - `--table`: the chosen tables (plain and partitioned) and what hangs
//!   off them: defaults, constraints, indexes, extended statistics,
//!   triggers, rules, policies, row security, owned sequences, partition
//!   attachments between chosen tables, comments, grants and security
//!   labels. Objects the tables merely use (schemas, types, functions) are
//!   not restored: they must exist in the target, as with `pg_restore -t`.
//! - `--exclude-table` alone: everything but the relations it matches (of
//!   any kind, as `pg_dump --exclude-table`) and what hangs off them.
//!   Objects that merely use an excluded relation (a view over it) stay.
//!
//! Entries are read from the archive itself ([`super::archive`]), each name
//! a field of its own. What "hangs off" a relation is decided from the
//! entry's dependencies, not from its name: a comment, grant or security
//! label depends on exactly the object it is about; a default, constraint,
//! trigger, rule or policy (whose name pg_dump writes as `TABLE NAME`)
//! belongs to the relation among its dependencies whose name begins that
//! tag. A foreign key depends on both its table and the referenced one;
//! the referenced one is recognised as the owner of the referenced
//! constraint or index, also a dependency. What is left ambiguous: a rule
//! or policy on table `a` named `b …` that also reads a table `a b` in the
//! same schema is taken as `a b`'s.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::TempFile;
use crate::jobs::JobError;
use crate::pg::dump_archive::{Entry, Toc};
use crate::pg::pattern::NamePattern;

/// Entries that are relations (what `--table` patterns name).
const RELATIONS: &[&str] = &[
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "FOREIGN TABLE",
    "SEQUENCE",
];

/// Relations that can carry defaults, constraints, indexes, triggers, …
const TABLE_LIKE: &[&str] = &["TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE"];

/// How an entry's fate is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Chosen by the patterns.
    Relation,
    /// Belongs to the relation among its dependencies named by its tag:
    /// the tag is the relation's name (`exact`) or begins with it and a
    /// space (`TABLE CONSTRAINT`).
    Owned { exact: bool },
    /// `SEQUENCE OWNED BY`: goes with its sequence and the sequence's table.
    OwnedBy,
    /// Goes with every relation it depends on (index, extended statistics,
    /// partition attachment).
    OnRelations,
    /// Goes with every entry it depends on (comment, grant, security label,
    /// statistics data, index attachment).
    Follows,
    /// Restored by `--exclude-table`, not by `--table`.
    Other,
}

fn rule(desc: &str, include: bool) -> Rule {
    match desc {
        d if RELATIONS.contains(&d) => Rule::Relation,
        "ROW SECURITY" | "TABLE DATA" | "MATERIALIZED VIEW DATA" | "SEQUENCE SET" => {
            Rule::Owned { exact: true }
        }
        "DEFAULT" | "CONSTRAINT" | "CHECK CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER" | "POLICY"
        | "RULE" => Rule::Owned { exact: false },
        "SEQUENCE OWNED BY" => Rule::OwnedBy,
        "INDEX" | "STATISTICS" | "TABLE ATTACH" => Rule::OnRelations,
        // A table's membership of a publication goes with the table when it
        // is excluded; with --table the publication must exist already.
        "PUBLICATION TABLE" if !include => Rule::OnRelations,
        "COMMENT" | "ACL" | "SECURITY LABEL" | "STATISTICS DATA" | "INDEX ATTACH" => Rule::Follows,
        _ => Rule::Other,
    }
}

/// The entries a filtered restore runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocSelection {
    /// Per entry of the table of contents (same order): restore it?
    pub keep: Vec<bool>,
    /// `(schema, name)` of the kept `TABLE` entries.
    pub tables: HashSet<(String, String)>,
    /// `(schema, name)` of the kept `SEQUENCE` entries.
    pub sequences: HashSet<(String, String)>,
}

struct Selector<'a> {
    entries: &'a [Entry<String>],
    by_id: HashMap<i32, usize>,
    include: &'a [NamePattern],
    exclude: &'a [NamePattern],
    memo: Vec<Option<bool>>,
}

impl Selector<'_> {
    fn ns(&self, i: usize) -> &str {
        self.entries[i].namespace.as_deref().unwrap_or("")
    }

    /// Kept unless something says otherwise (`--exclude-table`), or not.
    fn default(&self) -> bool {
        self.include.is_empty()
    }

    fn deps(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut seen = HashSet::new();
        self.entries[i]
            .deps
            .iter()
            .filter_map(|d| self.by_id.get(d).copied())
            .filter(move |&j| seen.insert(j))
    }

    fn deps_of_kind<'s>(&'s self, i: usize, kinds: &'s [&str]) -> impl Iterator<Item = usize> + 's {
        self.deps(i)
            .filter(move |&j| kinds.contains(&self.entries[j].desc.as_str()))
    }

    /// The relations among `i`'s dependencies whose name its tag names.
    fn owner_candidates(&self, i: usize, exact: bool) -> Vec<usize> {
        let tag = &self.entries[i].tag;
        let kinds = if exact { RELATIONS } else { TABLE_LIKE };
        self.deps_of_kind(i, kinds)
            .filter(|&j| self.ns(j) == self.ns(i))
            .filter(|&j| {
                let name = &self.entries[j].tag;
                if exact {
                    tag == name
                } else {
                    tag.strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with(' '))
                }
            })
            .collect()
    }

    /// The relation entry `i` belongs to.
    fn owner(&self, i: usize, exact: bool) -> Option<usize> {
        let mut cands = self.owner_candidates(i, exact);
        if cands.len() > 1 {
            // A foreign key also depends on the table it references, through
            // the referenced constraint or index: that table is not its owner.
            let referenced: HashSet<usize> = self
                .deps_of_kind(i, &["CONSTRAINT", "INDEX"])
                .flat_map(|d| match self.entries[d].desc.as_str() {
                    "INDEX" => self.deps_of_kind(d, TABLE_LIKE).collect::<Vec<_>>(),
                    _ => self.owner_candidates(d, false),
                })
                .collect();
            if cands.iter().any(|c| !referenced.contains(c)) {
                cands.retain(|c| !referenced.contains(c));
            }
        }
        cands.into_iter().max_by_key(|&j| self.entries[j].tag.len())
    }

    fn excluded(&self, i: usize) -> bool {
        self.exclude
            .iter()
            .any(|p| p.matches(self.ns(i), &self.entries[i].tag))
    }

    fn keep(&mut self, i: usize, depth: usize) -> bool {
        if let Some(k) = self.memo[i] {
            return k;
        }
        // Dependencies form no deep chains; a cycle (which a valid archive
        // does not have) ends here.
        if depth > 32 {
            return self.default();
        }
        let entries = self.entries;
        let e = &entries[i];
        let include = !self.include.is_empty();
        let k = match rule(&e.desc, include) {
            Rule::Relation if !include => !self.excluded(i),
            Rule::Relation if self.excluded(i) => false,
            Rule::Relation => match e.desc.as_str() {
                "TABLE" => self.include.iter().any(|p| p.matches(self.ns(i), &e.tag)),
                // An owned (serial or identity) sequence comes with its table.
                "SEQUENCE" => {
                    let tables: Vec<usize> = self.deps_of_kind(i, &["TABLE"]).collect();
                    tables.into_iter().any(|t| self.keep(t, depth + 1))
                }
                _ => false,
            },
            Rule::Owned { exact } => match self.owner(i, exact) {
                Some(o) => self.keep(o, depth + 1),
                None => self.default(),
            },
            Rule::OwnedBy => match self.owner(i, true) {
                Some(seq) => {
                    let tables: Vec<usize> = self.deps_of_kind(seq, TABLE_LIKE).collect();
                    self.keep(seq, depth + 1) && tables.into_iter().all(|t| self.keep(t, depth + 1))
                }
                None => self.default(),
            },
            Rule::OnRelations => self.all_kept(i, TABLE_LIKE, depth),
            Rule::Follows => self.all_kept(i, &[], depth),
            Rule::Other => self.default(),
        };
        self.memo[i] = Some(k);
        k
    }

    /// Every dependency of `i` (of `kinds`, or of any kind) is kept; the
    /// default when it has none.
    fn all_kept(&mut self, i: usize, kinds: &[&str], depth: usize) -> bool {
        let deps: Vec<usize> = self
            .deps(i)
            .filter(|&j| kinds.is_empty() || kinds.contains(&self.entries[j].desc.as_str()))
            .collect();
        if deps.is_empty() {
            return self.default();
        }
        deps.into_iter().all(|j| self.keep(j, depth + 1))
    }
}

/// Decide every entry of `toc` for `--table` patterns `include` (none:
/// everything) and `--exclude-table` patterns `exclude`.
pub fn select(toc: &Toc<String>, include: &[NamePattern], exclude: &[NamePattern]) -> TocSelection {
    let entries = &toc.entries;
    let mut s = Selector {
        entries,
        by_id: entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.dump_id, i))
            .collect(),
        include,
        exclude,
        memo: vec![None; entries.len()],
    };
    let keep: Vec<bool> = (0..entries.len()).map(|i| s.keep(i, 0)).collect();
    let named = |desc: &str| -> HashSet<(String, String)> {
        entries
            .iter()
            .zip(&keep)
            .filter(|(e, k)| **k && e.desc == desc)
            .map(|(e, _)| (e.namespace.clone().unwrap_or_default(), e.tag.clone()))
            .collect()
    };
    TocSelection {
        tables: named("TABLE"),
        sequences: named("SEQUENCE"),
        keep,
    }
}

/// A kept foreign key whose referenced table is not restored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutwardKey {
    /// The `FK CONSTRAINT` entry.
    pub entry: usize,
    /// Its table, (schema, name).
    pub table: (String, String),
    /// The constraint's name.
    pub name: String,
    /// The table it references, (schema, name).
    pub references: (String, String),
}

impl OutwardKey {
    /// `constraint on table (references table)`, names quoted as needed.
    pub fn describe(&self) -> String {
        use crate::pg::{display_ident, display_qualified};
        format!(
            "foreign key {} on {} (references {})",
            display_ident(&self.name),
            display_qualified(&self.table.0, &self.table.1),
            display_qualified(&self.references.0, &self.references.1)
        )
    }
}

/// The kept foreign keys that reference a table the kept entries do not
/// create: they can be created only where the target has that table.
/// Foreign keys whose definition pgtide cannot read are not listed.
pub fn outward_foreign_keys(toc: &Toc<String>, keep: &[bool]) -> Vec<OutwardKey> {
    let kept = |i: usize| keep.get(i).copied().unwrap_or(false);
    let tables: HashSet<(&str, &str)> = toc
        .entries
        .iter()
        .enumerate()
        .filter(|(i, e)| kept(*i) && e.desc == "TABLE")
        .map(|(_, e)| (e.namespace.as_deref().unwrap_or(""), e.tag.as_str()))
        .collect();
    toc.entries
        .iter()
        .enumerate()
        .filter(|(i, e)| kept(*i) && e.desc == "FK CONSTRAINT")
        .filter_map(|(i, e)| {
            let k = e.foreign_key.as_ref()?;
            let (rs, rn) = &k.references;
            if tables.contains(&(rs.as_str(), rn.as_str())) {
                return None;
            }
            // The tag is "table constraint".
            let name = e
                .tag
                .strip_prefix(k.table.1.as_str())
                .and_then(|r| r.strip_prefix(' '))
                .unwrap_or(&e.tag)
                .to_string();
            Some(OutwardKey {
                entry: i,
                table: k.table.clone(),
                name,
                references: k.references.clone(),
            })
        })
        .collect()
}

/// The tablespaces the kept entries go in (none for the default one).
pub fn tablespaces(toc: &Toc<String>, keep: &[bool]) -> BTreeSet<String> {
    toc.entries
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .filter_map(|(e, _)| e.tablespace.clone())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The list for `pg_restore --use-list`: one kept entry a line, in archive
/// order. pg_restore reads the dump id before `;`; the rest is for people.
pub fn list_text(toc: &Toc<String>, keep: &[bool]) -> String {
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    toc.entries
        .iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(e, _)| {
            format!(
                "{}; {} {} {}\n",
                e.dump_id,
                e.desc,
                one_line(e.namespace.as_deref().unwrap_or("-")),
                one_line(&e.tag)
            )
        })
        .collect()
}

/// Write [`list_text`] to a temporary file for `pg_restore --use-list`.
/// Written at once (a line per entry): a write left on the blocking pool
/// by a restore that stopped could create the file after its `TempFile`
/// was dropped, and leave it behind.
pub async fn write_list(toc: &Toc<String>, keep: &[bool]) -> Result<TempFile, JobError> {
    let tmp = TempFile::new(".list");
    std::fs::write(tmp.path(), list_text(toc, keep)).map_err(|e| JobError::Io {
        context: format!("write {}", tmp.path().display()),
        source: e,
    })?;
    Ok(tmp)
}

/// Post-data entries that only build one table's own indexes and its
/// primary key, unique and exclusion constraints: they can run as soon as
/// that table's rows are in, while other tables still load. By `(schema,
/// table)`, in archive order, kept entries only. Left out (for the final
/// post-data pass): anything that depends on another relation or on
/// another post-data entry (foreign keys, partition attachments, index
/// attachments), and every entry of a partition or partitioned table.
pub fn own_index_entries(
    toc: &Toc<String>,
    keep: &[bool],
) -> HashMap<(String, String), Vec<usize>> {
    let entries = &toc.entries;
    let by_id: HashMap<i32, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.dump_id, i))
        .collect();
    let deps = |i: usize| -> Vec<usize> {
        entries[i]
            .deps
            .iter()
            .filter_map(|d| by_id.get(d).copied())
            .collect()
    };
    // Partitions and partitioned tables: what TABLE ATTACH entries join.
    let partitioning: HashSet<usize> = (0..entries.len())
        .filter(|&i| entries[i].desc == "TABLE ATTACH")
        .flat_map(deps)
        .filter(|&j| entries[j].desc == "TABLE")
        .collect();
    let mut out: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if !keep.get(i).copied().unwrap_or(false)
            || !matches!(e.desc.as_str(), "INDEX" | "CONSTRAINT")
        {
            continue;
        }
        let d = deps(i);
        let relations: Vec<usize> = d
            .iter()
            .copied()
            .filter(|&j| RELATIONS.contains(&entries[j].desc.as_str()))
            .collect();
        let [table] = relations[..] else {
            continue;
        };
        let post_data = d.iter().any(|&j| {
            matches!(
                entries[j].desc.as_str(),
                "INDEX"
                    | "CONSTRAINT"
                    | "FK CONSTRAINT"
                    | "CHECK CONSTRAINT"
                    | "TRIGGER"
                    | "RULE"
                    | "POLICY"
                    | "INDEX ATTACH"
                    | "TABLE ATTACH"
                    | "STATISTICS"
            )
        });
        if entries[table].desc != "TABLE" || partitioning.contains(&table) || post_data {
            continue;
        }
        let t = &entries[table];
        out.entry((t.namespace.clone().unwrap_or_default(), t.tag.clone()))
            .or_default()
            .push(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::dump_archive::read_toc;

    /// proto-fixtures/pg_dump/README.md; the schema is `schema.sql` there.
    const ARCHIVES: [&[u8]; 2] = [
        include_bytes!("../../../proto-fixtures/pg_dump/15-schema.dump"),
        include_bytes!("../../../proto-fixtures/pg_dump/18-schema.dump"),
    ];

    fn patterns(p: &[&str]) -> Vec<NamePattern> {
        p.iter().map(|p| NamePattern::parse(p).unwrap()).collect()
    }

    /// `DESC SCHEMA TAG` of the kept entries, for each fixture archive.
    fn kept(include: &[&str], exclude: &[&str]) -> Vec<BTreeSet<String>> {
        ARCHIVES
            .iter()
            .map(|a| {
                let toc = read_toc(a).unwrap().decode(&HashMap::new());
                let sel = select(&toc, &patterns(include), &patterns(exclude));
                toc.entries
                    .iter()
                    .zip(&sel.keep)
                    .filter(|(_, k)| **k)
                    .map(|(e, _)| {
                        format!(
                            "{} {} {}",
                            e.desc,
                            e.namespace.as_deref().unwrap_or("-"),
                            e.tag
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_table_whose_names_hold_spaces_with_all_that_hangs_off_it() {
        for k in kept(&["\"Sales Dept\".\"Order Items\""], &[]) {
            assert_eq!(
                k,
                set(&[
                    "TABLE Sales Dept Order Items",
                    "COMMENT Sales Dept TABLE \"Order Items\"",
                    "COMMENT Sales Dept COLUMN \"Order Items\".\"unit.price\"",
                    "ACL Sales Dept TABLE \"Order Items\"",
                    "ACL Sales Dept COLUMN \"Order Items\".note",
                    "SEQUENCE Sales Dept Order Items_Item ID_seq",
                    "SEQUENCE OWNED BY Sales Dept Order Items_Item ID_seq",
                    "DEFAULT Sales Dept Order Items Item ID",
                    "CHECK CONSTRAINT Sales Dept Order Items Order Items checked",
                    "CONSTRAINT Sales Dept Order Items Order Items_pkey",
                    "INDEX Sales Dept Order Items note",
                    "COMMENT Sales Dept INDEX \"Order Items note\"",
                ])
            );
        }
    }

    #[test]
    fn a_foreign_key_belongs_to_its_table_not_to_the_one_it_references() {
        // "Order"'s key "Items fk" has the tag `Order Items fk`, and depends
        // on table "Order Items" too.
        for k in kept(&["\"Sales Dept\".\"Order\""], &[]) {
            assert_eq!(
                k,
                set(&[
                    "TABLE Sales Dept Order",
                    "CONSTRAINT Sales Dept Order Order_pkey",
                    "FK CONSTRAINT Sales Dept Order Items fk",
                ])
            );
        }
    }

    #[test]
    fn a_partitioned_table_and_its_partitions() {
        for k in kept(&["public.events*"], &[]) {
            assert_eq!(
                k,
                set(&[
                    "TABLE public events",
                    "TABLE public events_2025",
                    "TABLE ATTACH public events_2025",
                    "SEQUENCE public events_id_seq",
                    "SEQUENCE OWNED BY public events_id_seq",
                    "DEFAULT public events id",
                    "CONSTRAINT public events events_pkey",
                    "CONSTRAINT public events_2025 events_2025_pkey",
                    "INDEX public events_at_idx",
                    "INDEX public events_2025_at_idx",
                    "INDEX ATTACH public events_2025_at_idx",
                    "INDEX ATTACH public events_2025_pkey",
                ])
            );
        }
        // A partition alone is restored as a table of its own: attaching it
        // needs the parent.
        for k in kept(&["public.events_2025"], &[]) {
            assert_eq!(
                k,
                set(&[
                    "TABLE public events_2025",
                    "CONSTRAINT public events_2025 events_2025_pkey",
                    "INDEX public events_2025_at_idx",
                ])
            );
        }
    }

    #[test]
    fn triggers_rules_policies_and_row_security_come_with_their_table() {
        for k in kept(&["owned"], &[]) {
            assert_eq!(
                k,
                set(&[
                    "TABLE public owned",
                    "SEQUENCE public owned_id_seq",
                    "SEQUENCE OWNED BY public owned_id_seq",
                    "DEFAULT public owned id",
                    "CONSTRAINT public owned owned_pkey",
                    "RULE public owned owned rule",
                    "TRIGGER public owned owned trg",
                    "ROW SECURITY public owned",
                    "POLICY public owned see all",
                ])
            );
        }
        for k in kept(&["public.hot", "public.ident"], &[]) {
            assert_eq!(
                k,
                set(&[
                    "TABLE public hot",
                    "CONSTRAINT public hot hot_pkey",
                    "STATISTICS public hot_stats",
                    "TABLE public ident",
                    "SEQUENCE public ident_id_seq",
                ])
            );
        }
    }

    #[test]
    fn exclude_leaves_out_the_relations_and_what_hangs_off_them_only() {
        let all = kept(&[], &[]);
        for (k, all) in kept(&[], &["public.owned", "public.events_2025"])
            .into_iter()
            .zip(all)
        {
            let gone: BTreeSet<String> = all.difference(&k).cloned().collect();
            assert_eq!(
                gone,
                set(&[
                    "TABLE public owned",
                    "SEQUENCE OWNED BY public owned_id_seq",
                    "DEFAULT public owned id",
                    "CONSTRAINT public owned owned_pkey",
                    "RULE public owned owned rule",
                    "TRIGGER public owned owned trg",
                    "ROW SECURITY public owned",
                    "POLICY public owned see all",
                    "TABLE public events_2025",
                    "TABLE ATTACH public events_2025",
                    "CONSTRAINT public events_2025 events_2025_pkey",
                    "INDEX public events_2025_at_idx",
                    "INDEX ATTACH public events_2025_at_idx",
                    "INDEX ATTACH public events_2025_pkey",
                ])
            );
            // What merely uses an excluded table stays; so does everything
            // without a table: schemas, functions, the encoding.
            for stays in [
                "VIEW public v",
                "MATERIALIZED VIEW public mv",
                "SEQUENCE public owned_id_seq",
                "SCHEMA - Sales Dept",
                "FUNCTION public trg()",
                "ENCODING - ENCODING",
                "SEQUENCE public free_seq",
            ] {
                assert!(k.contains(stays), "{stays}");
            }
        }
        // Patterns exclude relations of every kind, as pg_dump's.
        for (k, all) in kept(&[], &["public.mv"]).into_iter().zip(kept(&[], &[])) {
            let gone: BTreeSet<String> = all.difference(&k).cloned().collect();
            assert_eq!(
                gone,
                set(&["MATERIALIZED VIEW public mv", "INDEX public mv_n"])
            );
        }
    }

    #[test]
    fn foreign_keys_to_tables_left_out_are_outward() {
        for a in ARCHIVES {
            let toc = read_toc(a).unwrap().decode(&HashMap::new());
            // "Order" references "Order Items": restored together, nothing
            // points out; "Order" alone points at "Order Items".
            let both = select(
                &toc,
                &patterns(&["\"Sales Dept\".\"Order\"", "\"Sales Dept\".\"Order Items\""]),
                &[],
            );
            assert!(outward_foreign_keys(&toc, &both.keep).is_empty());
            let one = select(&toc, &patterns(&["\"Sales Dept\".\"Order\""]), &[]);
            let out = outward_foreign_keys(&toc, &one.keep);
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(out[0].name, "Items fk");
            assert_eq!(out[0].table, ("Sales Dept".into(), "Order".into()));
            assert_eq!(
                out[0].references,
                ("Sales Dept".into(), "Order Items".into())
            );
            assert_eq!(toc.entries[out[0].entry].desc, "FK CONSTRAINT");
            assert_eq!(
                out[0].describe(),
                "foreign key \"Items fk\" on \"Sales Dept\".\"Order\" (references \"Sales Dept\".\"Order Items\")"
            );
        }
    }

    #[test]
    fn tablespaces_of_what_is_restored() {
        for a in ARCHIVES {
            let toc = read_toc(a).unwrap().decode(&HashMap::new());
            let all = select(&toc, &[], &[]);
            assert!(all.keep.iter().all(|k| *k));
            assert_eq!(tablespaces(&toc, &all.keep), set(&["fast_disk"]));
            let owned = select(&toc, &patterns(&["public.owned"]), &[]);
            assert!(tablespaces(&toc, &owned.keep).is_empty());
            assert_eq!(
                owned.tables,
                HashSet::from([("public".to_string(), "owned".to_string())])
            );
            assert_eq!(
                owned.sequences,
                HashSet::from([("public".to_string(), "owned_id_seq".to_string())])
            );
        }
    }

    #[test]
    fn the_list_has_one_line_per_kept_entry() {
        let toc = read_toc(ARCHIVES[0]).unwrap().decode(&HashMap::new());
        let sel = select(&toc, &patterns(&["\"Sales Dept\".\"Order\""]), &[]);
        let text = list_text(&toc, &sel.keep);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with("; TABLE Sales Dept Order"), "{text}");
        for l in lines {
            let id: i32 = l.split(';').next().unwrap().parse().unwrap();
            assert!(toc.entries.iter().any(|e| e.dump_id == id));
        }
    }

    #[test]
    fn indexes_and_keys_that_only_need_their_table() {
        for a in ARCHIVES {
            let toc = read_toc(a).unwrap().decode(&HashMap::new());
            let all = vec![true; toc.entries.len()];
            let own = own_index_entries(&toc, &all);
            let names = |schema: &str, table: &str| -> BTreeSet<String> {
                own.get(&(schema.to_string(), table.to_string()))
                    .into_iter()
                    .flatten()
                    .map(|&i| format!("{} {}", toc.entries[i].desc, toc.entries[i].tag))
                    .collect()
            };
            // Its primary key and index; not the NOT VALID check, not the
            // foreign key that points at it.
            assert_eq!(
                names("Sales Dept", "Order Items"),
                set(&[
                    "CONSTRAINT Order Items Order Items_pkey",
                    "INDEX Order Items note"
                ])
            );
            // The foreign key waits for the final pass; the key stays.
            assert_eq!(
                names("Sales Dept", "Order"),
                set(&["CONSTRAINT Order Order_pkey"])
            );
            assert_eq!(names("public", "hot"), set(&["CONSTRAINT hot hot_pkey"]));
            // Partitioned tables and partitions, and matviews: none.
            assert!(names("public", "events").is_empty());
            assert!(names("public", "events_2025").is_empty());
            assert!(names("public", "mv").is_empty());
            // Only kept entries.
            let none = own_index_entries(&toc, &vec![false; toc.entries.len()]);
            assert!(none.is_empty());
        }
    }
}
