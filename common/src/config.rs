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
        // toml quotes the offending key in backticks: "unknown field `bogus`, ...".
        key: e
            .message()
            .split('`')
            .nth(1)
            .unwrap_or("<document>")
            .to_string(),
        reason: e.to_string().trim().replace('\n', " "),
    })
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
}
