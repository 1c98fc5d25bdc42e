//! Parsing the two conninfo forms libpq accepts: `key=value` strings and
//! `postgres://` URIs, with libpq's checks of each value.

use super::*;

pub(super) fn invalid_value(keyword: &str, value: &str) -> ConnInfoError {
    ConnInfoError::InvalidValue {
        keyword: keyword.to_owned(),
        value: value.to_owned(),
    }
}

pub(super) fn parse_int(keyword: &str, value: &str) -> Result<i64, ConnInfoError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| ConnInfoError::InvalidInteger {
            keyword: keyword.to_owned(),
            value: value.to_owned(),
        })
}

/// A comma-separated port list; an empty entry is the default port, and a
/// list of only empty entries means "not given".
pub(super) fn parse_ports(value: &str) -> Result<Vec<u16>, ConnInfoError> {
    if value.split(',').all(|p| p.trim().is_empty()) {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|p| match p.trim() {
            "" => Ok(DEFAULT_PORT),
            p => p.parse::<u16>().ok().filter(|n| *n != 0).ok_or_else(|| {
                ConnInfoError::InvalidPort {
                    value: p.to_owned(),
                }
            }),
        })
        .collect()
}

/// Checks the values of the keywords kept in `ConnInfo::other` that libpq
/// restricts, so bad values fail at parse time rather than at connect time.
pub(super) fn validate_other(keyword: &str, value: &str) -> Result<(), ConnInfoError> {
    let allowed: &[&str] = match keyword {
        "keepalives"
        | "keepalives_idle"
        | "keepalives_interval"
        | "keepalives_count"
        | "tcp_user_timeout"
        | "sslcompression"
        | "sslsni"
        | "gssdelegation" => {
            parse_int(keyword, value)?;
            return Ok(());
        }
        "target_session_attrs" => &[
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ],
        "channel_binding" => &["disable", "prefer", "require"],
        "load_balance_hosts" => &["disable", "random"],
        "sslnegotiation" => &["postgres", "direct"],
        "gssencmode" => &["disable", "prefer", "require"],
        "sslcertmode" => &["disable", "allow", "require"],
        "ssl_min_protocol_version" | "ssl_max_protocol_version" => {
            &["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
        }
        "replication" => &[
            "database", "true", "false", "on", "off", "yes", "no", "1", "0",
        ],
        _ => return Ok(()),
    };
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(invalid_value(keyword, value))
    }
}

/// libpq's `key=value` form: whitespace-separated pairs, optional spaces
/// around `=`, values optionally single-quoted, backslash escapes the next
/// character (quoted or not). A later keyword overrides an earlier one.
pub(super) fn parse_key_values(s: &str) -> Result<ConnInfo, ConnInfoError> {
    let mut ci = ConnInfo::default();
    let mut chars = s.chars().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        if chars.peek().is_none() {
            break;
        }
        let mut keyword = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace() && *c != '=') {
            keyword.push(c);
        }
        skip_space(&mut chars);
        if chars.next() != Some('=') {
            return Err(ConnInfoError::MissingEquals { keyword });
        }
        skip_space(&mut chars);
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(ConnInfoError::UnterminatedQuote),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(ConnInfoError::UnterminatedQuote),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        ci.set(&keyword, &value)?;
    }
    Ok(ci)
}

/// libpq's URI form, after the scheme:
/// `[user[:password]@][host][:port][,host[:port]...][/dbname][?param=value&...]`.
/// Query parameters override what the authority gave (`?host=/socket/dir`).
pub(super) fn parse_uri(rest: &str) -> Result<ConnInfo, ConnInfoError> {
    let mut ci = ConnInfo::default();
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, mut rest) = rest.split_at(authority_end);

    // The last '@' ends the user info, so an unencoded '@' in a password works.
    let hostlist = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            ci.set("user", &percent_decode(user, "user name")?)?;
            if let Some(password) = password {
                ci.set("password", &percent_decode(password, "password")?)?;
            }
            &authority[at + 1..]
        }
        None => authority,
    };

    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    let mut entry = hostlist;
    if !hostlist.is_empty() {
        loop {
            let (host, after_host) = if let Some(v6) = entry.strip_prefix('[') {
                let close = v6
                    .find(']')
                    .ok_or_else(|| ConnInfoError::UnterminatedIpv6 {
                        host: entry.split(',').next().unwrap_or(entry).to_owned(),
                    })?;
                if close == 0 {
                    return Err(ConnInfoError::EmptyIpv6);
                }
                let after = &v6[close + 1..];
                if let Some(ch) = after.chars().next().filter(|c| *c != ':' && *c != ',') {
                    return Err(ConnInfoError::UnexpectedUriChar { ch });
                }
                (percent_decode(&v6[..close], "host")?, after)
            } else {
                let end = entry.find([':', ',']).unwrap_or(entry.len());
                (percent_decode(&entry[..end], "host")?, &entry[end..])
            };
            let (port, after_port) = match after_host.strip_prefix(':') {
                Some(p) => {
                    let end = p.find(',').unwrap_or(p.len());
                    (percent_decode(&p[..end], "port")?, &p[end..])
                }
                None => (String::new(), after_host),
            };
            hosts.push(host);
            ports.push(port);
            match after_port.strip_prefix(',') {
                Some(next) => entry = next,
                None => break,
            }
        }
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        ci.set("host", &hosts.join(","))?;
    }
    if ports.iter().any(|p| !p.is_empty()) {
        ci.set("port", &ports.join(","))?;
    }

    if let Some(path) = rest.strip_prefix('/') {
        let end = path.find('?').unwrap_or(path.len());
        ci.set("dbname", &percent_decode(&path[..end], "database name")?)?;
        rest = &path[end..];
    }
    if let Some(query) = rest.strip_prefix('?') {
        for parameter in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) =
                parameter
                    .split_once('=')
                    .ok_or_else(|| ConnInfoError::MissingUriSeparator {
                        parameter: parameter.to_owned(),
                    })?;
            if value.contains('=') {
                return Err(ConnInfoError::ExtraUriSeparator {
                    parameter: key.to_owned(),
                });
            }
            let key = percent_decode(key, "query parameter")?;
            let part = if key == "password" {
                "password"
            } else {
                "query parameter"
            };
            let value = percent_decode(value, part)?;
            // libpq keeps JDBC's "ssl=true" working.
            let (key, value) = if key == "ssl" && value == "true" {
                ("sslmode".to_owned(), "require".to_owned())
            } else {
                (key, value)
            };
            ci.set(&key, &value).map_err(|e| match e {
                ConnInfoError::UnknownOption { keyword } => {
                    ConnInfoError::UnknownUriParameter { keyword }
                }
                e => e,
            })?;
        }
    }
    Ok(ci)
}

/// Decodes `%XX` escapes (`+` stays `+`, as in libpq). `part` names where
/// the text came from, for the error; a password is never echoed.
pub(super) fn percent_decode(s: &str, part: &'static str) -> Result<String, ConnInfoError> {
    let shown = || {
        if part == "password" {
            "(hidden)".to_owned()
        } else {
            s.to_owned()
        }
    };
    // libpq refuses what `percent_decode_str` would pass through as it is:
    // a `%` without two hex digits after it, and `%00`.
    let valid = s.match_indices('%').all(|(i, _)| {
        s.as_bytes()
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !valid {
        return Err(ConnInfoError::InvalidPercent {
            part,
            value: shown(),
        });
    }
    let out: Vec<u8> = percent_encoding::percent_decode_str(s).collect();
    if out.contains(&0) {
        return Err(ConnInfoError::NulInPercent {
            part,
            value: shown(),
        });
    }
    String::from_utf8(out).map_err(|_| ConnInfoError::InvalidPercent {
        part,
        value: shown(),
    })
}
