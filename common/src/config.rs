//! Reading TOML configuration files with errors that name the offending key.

use serde::de::DeserializeOwned;

/// A configuration document that could not be read, and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

/// Parses `text`; unknown keys (with `deny_unknown_fields`) and wrong types are errors
/// naming the key (`<document>` when the TOML itself is malformed).
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError {
        key: key_of(text, &e),
        reason: e.to_string().trim().replace('\n', " "),
    })
}

/// The dotted key an error is about. toml reports where in the text it failed; the key is
/// the one on that line, under the table header in effect there. A missing key names
/// itself in the message ("missing field `key`"), with the table it is missing from.
fn key_of(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message();
    let quoted = msg.split('`').nth(1).filter(|k| !k.is_empty());
    let Some(span) = e.span() else {
        return quoted.unwrap_or("<document>").to_string();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim();
    let header = |l: &str| {
        l.strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .map(|t| {
                t.trim_matches(|c| c == '[' || c == ']' || c == ' ')
                    .to_string()
            })
    };
    // The table in effect: the last header above the error (or on its line).
    let table = text[..line_end]
        .lines()
        .rev()
        .find_map(|l| header(l.trim()));
    let join = |key: &str| match &table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    };
    if msg.starts_with("missing field") {
        let field = quoted.unwrap_or("<document>");
        // toml points at the table that lacks the field: a `[table]` section (from its
        // header), an inline table or dotted key on a `key = ...` line, or the root's keys.
        let spanned = text.get(span.clone()).unwrap_or("").trim();
        if let Some(t) = spanned.lines().next().and_then(|l| header(l.trim())) {
            return format!("{t}.{field}");
        }
        let raw = &text[line_start..line_end];
        if let (None, Some(eq)) = (header(line), raw.find('=')) {
            let key = raw[..eq].trim().trim_matches('"');
            if start > line_start + eq {
                return join(&format!("{key}.{field}"));
            }
            if !spanned.is_empty() && !spanned.contains(['=', '\n', '[', '{']) {
                return join(&format!("{spanned}.{field}"));
            }
        }
        return field.to_string();
    }
    if let Some((key, _)) = line.split_once('=').filter(|_| header(line).is_none()) {
        let key = key.trim().trim_matches('"');
        if !key.is_empty() {
            return join(key);
        }
    }
    if let Some(t) = header(line).filter(|t| !t.is_empty()) {
        return t;
    }
    // A line that is no `key = value` at all: a syntax error of the document (the reason
    // says where), whatever the message quotes.
    match quoted {
        Some(k) if msg.starts_with("unknown field") => k.to_string(),
        _ => "<document>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        port: u16,
    }

    #[test]
    fn names_the_key() {
        assert_eq!(parse_toml::<Doc>("bogus = 1").unwrap_err().key, "bogus");
        assert!(
            parse_toml::<Doc>("port = \"x\"")
                .unwrap_err()
                .reason
                .contains("port")
        );
        assert!(parse_toml::<Doc>("port = [").is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        mode: Option<Mode>,
        tls: Option<Files>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Allow,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Files {
        ca: String,
        key: String,
    }

    /// Regressions found by the agent's config fuzz target: a bad enum value was reported
    /// under the value's name ("" or "bogus") instead of the key's.
    #[test]
    fn names_the_key_of_a_bad_value_and_of_a_missing_key() {
        for (doc, key) in [
            ("mode = \"\"", "mode"),
            ("mode = \"bogus\"", "mode"),
            ("[tls]\nca = \"a\"", "tls.key"),
            ("[tls]\nca = 1\nkey = \"k\"", "tls.ca"),
            ("[tls]\nca = \"a\"\nkey = \"k\"\nextra = 1", "tls.extra"),
            ("tls.ca = \"\"", "tls.key"),
            ("tls = {}\nmode = \"allow\"", "tls.ca"),
            ("mode = \"allow\"\n[tls]\nca = \"a\"", "tls.key"),
        ] {
            assert_eq!(parse_toml::<Nested>(doc).unwrap_err().key, key, "{doc}");
        }
    }
}
