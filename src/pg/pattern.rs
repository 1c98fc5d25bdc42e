//! psql/pg_dump name patterns (`-t 'public.acc*'`) turned into anchored
//! regular expressions, following psql's `patternToSQLRegex`
//! (`src/fe_utils/string_utils.c`). Outside double quotes: ASCII letters
//! fold to lower case, `*` is `.*`, `?` is `.`, `.` separates database,
//! schema and name, and every other character passes through as regular
//! expression syntax (`[ab]`, `+`, `|`, `(…)`), except `[]` (an array type
//! name, matched literally). Inside double quotes the text is matched
//! exactly (case kept, `""` is one quote). `$` is always literal: it is
//! allowed in identifiers, and the patterns are anchored anyway. Pure code.

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
                    cur.push('"');
                }
                '"' => in_quotes = !in_quotes,
                '$' => cur.push_str("\\$"),
                c if in_quotes => cur.push_str(&regex::escape(&c.to_string())),
                '.' => parts.push(String::new()),
                '*' => cur.push_str(".*"),
                '?' => cur.push('.'),
                '[' if chars.peek() == Some(&']') => cur.push_str("\\["),
                // As psql and the server: only ASCII letters fold to lower
                // case; the rest is regular-expression syntax as written.
                c => cur.push(c.to_ascii_lowercase()),
            }
        }
        if in_quotes {
            return Err(format!(
                "unterminated quote in pattern {pattern:?} (hint: close the name with \")"
            ));
        }
        let compile = |s: &str| {
            // `(?s)`: `.` matches a newline too, as in PostgreSQL's regular
            // expressions (names may hold one).
            regex::Regex::new(&format!("^(?s:{s})$")).map_err(|e| {
                format!(
                    "invalid pattern {pattern:?}: {} (hint: outside double quotes, psql patterns are regular expressions; quote a name to match it exactly)",
                    regex_error(&e)
                )
            })
        };
        let (schema, name) = match parts.len() {
            1 => (None, compile(&parts[0])?),
            2 => (Some(compile(&parts[0])?), compile(&parts[1])?),
            // database.schema.name: the database part is ignored, as pg_dump
            // does when it names the current database.
            3 => (Some(compile(&parts[1])?), compile(&parts[2])?),
            _ => {
                return Err(format!(
                    "improper qualified name (too many dotted names): {pattern} (hint: write a name that holds dots in double quotes)"
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

/// The one-line reason of a regex syntax error (its text is a multi-line
/// diagram whose last line says what is wrong).
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or("not a valid regular expression")
        .to_string()
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
    fn regular_expressions_pass_through_outside_quotes() {
        let p = NamePattern::parse("public.tmp_[ab]").unwrap();
        assert!(p.matches("public", "tmp_a") && p.matches("public", "tmp_b"));
        assert!(!p.matches("public", "tmp_c") && !p.matches("public", "tmp_[ab]"));
        // Alternation stays inside the anchors.
        let p = NamePattern::parse("a|bc").unwrap();
        assert!(p.matches("s", "a") && p.matches("s", "bc"));
        assert!(!p.matches("s", "abc") && !p.matches("s", "xbc"));
        let p = NamePattern::parse("t(1|2)+").unwrap();
        assert!(p.matches("s", "t1212") && !p.matches("s", "t3"));
        // ASCII letters fold, also in classes; quoted text does not.
        let p = NamePattern::parse("[A-C]x").unwrap();
        assert!(p.matches("s", "bx") && !p.matches("s", "Bx"));
        // `$` is always literal, quoted or not.
        let p = NamePattern::parse("cache$1").unwrap();
        assert!(p.matches("s", "cache$1") && !p.matches("s", "cache"));
        let p = NamePattern::parse("\"cache$*\"").unwrap();
        assert!(p.matches("s", "cache$*") && !p.matches("s", "cache$1"));
        // `[]` is an array type name, not an empty class.
        let p = NamePattern::parse("int4[]").unwrap();
        assert!(p.matches("s", "int4[]"));
        // Inside quotes everything is literal.
        let p = NamePattern::parse("\"t_[ab]+\"").unwrap();
        assert!(p.matches("s", "t_[ab]+") && !p.matches("s", "t_a"));
        let p = NamePattern::parse("\"a\"\"b\"").unwrap();
        assert!(p.matches("s", "a\"b"));
        // `.` of a wildcard matches a newline, as in PostgreSQL.
        let p = NamePattern::parse("public.new*").unwrap();
        assert!(p.matches("public", "new\nline"));
        // database.schema.name: the database is ignored.
        let p = NamePattern::parse("db.public.t").unwrap();
        assert!(p.matches("public", "t") && !p.matches("other", "t"));
    }

    #[test]
    fn bad_patterns_are_one_line_errors_with_a_hint() {
        for bad in ["tmp_[ab", "a.b.c.d", "\"open", "x(", "*.t{2"] {
            let e = NamePattern::parse(bad).unwrap_err();
            assert!(!e.contains('\n') && e.contains("hint:"), "{bad}: {e}");
        }
        assert!(NamePattern::parse("tmp_[ab")
            .unwrap_err()
            .contains("unclosed character class"));
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
