//! The lab's control protocol between the host and each node's guest agent: one JSON object
//! per line over a virtio-serial port. Independent of the node's network, so a node cut off
//! from the bridge can still be driven and inspected.

use serde::{Deserialize, Serialize};

/// Name of the virtio-serial port the guest agent opens.
pub const PORT_NAME: &str = "rdmaq-lab";

/// Largest stdout or stderr the guest sends back for one command; the rest is cut.
pub const MAX_CAPTURE: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HostMsg {
    /// Run `cmd` with `/bin/sh -c` in its own process group; kill it after `timeout_ms`.
    Run {
        id: u64,
        cmd: String,
        timeout_ms: u64,
    },
    /// Kill the process group of a running command.
    Kill { id: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GuestMsg {
    /// The guest agent is up; sent once.
    Ready { name: String, kernel: String },
    /// A command ended.
    Done {
        id: u64,
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Signal number, if a signal ended it.
        signal: Option<i32>,
        timed_out: bool,
        stdout: String,
        stderr: String,
    },
    /// The guest could not start a command.
    Failed { id: u64, error: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_single_lines() {
        let msgs = [
            serde_json::to_string(&HostMsg::Run {
                id: 1,
                cmd: "echo 'a\nb'".into(),
                timeout_ms: 5,
            })
            .unwrap(),
            serde_json::to_string(&GuestMsg::Done {
                id: 1,
                code: Some(0),
                signal: None,
                timed_out: false,
                stdout: "a\nb\n".into(),
                stderr: String::new(),
            })
            .unwrap(),
        ];
        for m in &msgs {
            assert!(!m.contains('\n'), "{m}");
        }
        let back: HostMsg = serde_json::from_str(&msgs[0]).unwrap();
        assert!(matches!(back, HostMsg::Run { id: 1, .. }));
    }
}
