//! psql/pg_dump name patterns (`-t 'public.acc*'`) turned into anchored
//! regular expressions, as `processSQLNamePattern` does: unquoted letters are
//! lower-cased, `*` and `?` are wildcards, `.` separates schema and name,
//! double quotes keep case and make wildcards literal. Pure code.

/// A compiled pattern: optional schema regex and a name regex.
#[derive(Debug, Clone)]
pub struct NamePattern {
    pub original: String,
    schema: Option<regex::Regex>,
    name: regex::Regex,
}

impl NamePattern {
    pub fn parse(pattern: &str) -> Result<NamePattern, String> {
        let mut parts: Vec<String> = vec![String::new()];
        let mut in_quotes = false;
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let cur = parts.last_mut().expect("at least one part");
            match c {
                '"' if in_quotes && chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push_str(&regex::escape("\""));
                }
                '"' => in_quotes = !in_quotes,
                '.' if !in_quotes => parts.push(String::new()),
                '*' if !in_quotes => cur.push_str(".*"),
                '?' if !in_quotes => cur.push('.'),
                // As psql and the server: only ASCII letters fold to lower case.
                c if !in_quotes => {
                    cur.push_str(&regex::escape(&c.to_ascii_lowercase().to_string()))
                }
                c => cur.push_str(&regex::escape(&c.to_string())),
            }
        }
        if in_quotes {
            return Err(format!("unterminated quote in pattern {pattern:?}"));
        }
        let compile = |s: &str| {
            regex::Regex::new(&format!("^(?:{s})$"))
                .map_err(|e| format!("invalid pattern {pattern:?}: {e}"))
        };
        let (schema, name) = match parts.len() {
            1 => (None, compile(&parts[0])?),
            2 => (Some(compile(&parts[0])?), compile(&parts[1])?),
            // database.schema.name: the database part is ignored, as pg_dump
            // does when it names the current database.
            3 => (Some(compile(&parts[1])?), compile(&parts[2])?),
            _ => {
                return Err(format!(
                    "improper qualified name (too many dotted names): {pattern}"
                ))
            }
        };
        Ok(NamePattern {
            original: pattern.to_string(),
            schema,
            name,
        })
    }

    /// Does `schema.name` match? Without a schema part, pg_dump matches only
    /// objects visible on the search path; pgtide treats that as `public`
    /// plus any schema, which callers narrow with `has_schema`.
    pub fn matches(&self, schema: &str, name: &str) -> bool {
        self.name.is_match(name) && self.schema.as_ref().is_none_or(|s| s.is_match(schema))
    }

    pub fn has_schema(&self) -> bool {
        self.schema.is_some()
    }
}

/// True when `(schema, name)` is selected by include patterns (all when
/// empty) and not by any exclude pattern.
pub fn selected(
    include: &[NamePattern],
    exclude: &[NamePattern],
    schema: &str,
    name: &str,
) -> bool {
    (include.is_empty() || include.iter().any(|p| p.matches(schema, name)))
        && !exclude.iter().any(|p| p.matches(schema, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_rules() {
        let p = NamePattern::parse("public.acc*").unwrap();
        assert!(p.matches("public", "accounts"));
        assert!(!p.matches("other", "accounts"));
        let p = NamePattern::parse("Accounts").unwrap();
        assert!(p.matches("x", "accounts"));
        assert!(!p.matches("x", "Accounts"));
        let p = NamePattern::parse("\"Accounts\"").unwrap();
        assert!(p.matches("x", "Accounts"));
        let p = NamePattern::parse("\"a.b*\"").unwrap();
        assert!(p.matches("x", "a.b*"));
        assert!(!p.matches("x", "a.bc"));
        let p = NamePattern::parse("t?").unwrap();
        assert!(p.matches("s", "t1"));
        assert!(!p.matches("s", "t12"));
        let p = NamePattern::parse("*.t$x").unwrap();
        assert!(p.matches("s", "t$x"));
        assert!(NamePattern::parse("a.b.c.d").is_err());
        assert!(NamePattern::parse("\"open").is_err());
    }

    #[test]
    fn include_exclude() {
        let inc = vec![NamePattern::parse("public.*").unwrap()];
        let exc = vec![NamePattern::parse("public.log*").unwrap()];
        assert!(selected(&inc, &exc, "public", "accounts"));
        assert!(!selected(&inc, &exc, "public", "logs"));
        assert!(!selected(&inc, &exc, "app", "accounts"));
        assert!(selected(&[], &[], "app", "accounts"));
    }
}
