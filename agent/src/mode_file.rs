//! The node's agent-mode marker: a file (default `/run/rdmaq/agent-mode`, root's to write)
//! listing the sockets agents serve on this node, one path per line. The intercept library
//! reads it at a program's first verb: a listed socket that is missing means "the agent is
//! down" (fail-closed by default, retried), never "no agent here" (standalone, with QP control
//! off). It stays when the agent stops, since the node is still in agent mode while the
//! agent restarts; uninstalling removes it.

use std::{io, path::Path};

/// Adds `socket` to the marker at `file` (created with its directory if needed), keeping the
/// sockets of other agents on the node.
pub fn mark(file: &Path, socket: &Path) -> io::Result<()> {
    let socket = socket.display().to_string();
    let mut listed: Vec<String> = match std::fs::read_to_string(file) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    if listed.contains(&socket) {
        return Ok(());
    }
    listed.push(socket);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written whole then renamed: a program reading it never sees half of it.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, listed.join("\n") + "\n")?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_listed_once_each() {
        let dir = std::env::temp_dir().join(format!("rdmaq-mode-{}", std::process::id()));
        let file = dir.join("run/agent-mode");
        mark(&file, Path::new("/run/rdmaq/agent.sock")).unwrap();
        mark(&file, Path::new("/tmp/other.sock")).unwrap();
        mark(&file, Path::new("/run/rdmaq/agent.sock")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "/run/rdmaq/agent.sock\n/tmp/other.sock\n"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
