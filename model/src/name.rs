//! Names of tenants and nodes: one rule everywhere a name enters rdmaq (the CLI, the
//! coordinator's API and state machine, the agent's tenant rules and launcher names), so a
//! name one part accepts is never refused by another.

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Tenants one node may hold resources for at once, and so report on in one heartbeat: a
/// node serving more is misconfigured or under attack (tenant names through the launcher).
pub const MAX_TENANTS_PER_NODE: usize = 1_024;

/// Checks a tenant or node name: 1..=128 bytes of `[A-Za-z0-9._:/@-]`, starting with a
/// letter or digit. The error says what is wrong with it (and quotes it, escaped).
pub fn check_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "{} bytes long, the limit is {MAX_NAME_LEN}",
            value.len()
        ));
    }
    if !value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!("{value:?} must start with a letter or digit"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._:/@-".contains(*c)))
    {
        return Err(format!(
            "{value:?} contains {c:?}; allowed are letters, digits and . _ : / @ -"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_names() {
        for good in ["t1", "team-a/job.1", "ns:pod@node_7", &"x".repeat(128)] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
        for bad in ["", "-x", "a b", "a\u{0}", "ü", "a\nb", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
