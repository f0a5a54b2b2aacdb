//! Every payload members exchange or store survives the binary encoding, JSON from earlier
//! versions still reads, and peers switch encodings only when the other side says so.

use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, Membership, Vote,
    error::RaftError,
    raft::{AppendEntriesRequest, AppendEntriesResponse},
};
use rdmaq_model::QpTypes;
use tonic::Status;

use super::*;
use crate::{
    forward::{ForwardReply, Forwarded},
    raft::{Entry, LogId, NodeId, TypeConfig},
    state::*,
};

fn amounts(qp: u64) -> Amounts {
    Amounts {
        qp,
        mr: qp * 2,
        mr_bytes: qp << 20,
    }
}

fn limits(qp_types: Option<QpTypes>) -> Limits {
    Limits {
        cluster: Caps {
            qp: Some(400),
            ..Caps::NONE
        },
        max_send_wr: Some(64),
        qp_create_per_sec: Some(10),
        qp_types,
        ..Limits::NONE
    }
}

/// One of each command. The match below stops compiling when a command is added, so that
/// it is added here too.
fn every_command() -> Vec<Command> {
    let commands = vec![
        Command::SetQuota {
            tenant: "t1".into(),
            limits: limits(None),
        },
        Command::SetQuota {
            tenant: "t2".into(),
            limits: limits(Some(QpTypes::parse("RC,UD").unwrap())),
        },
        Command::DeleteQuota {
            tenant: "t1".into(),
        },
        Command::RegisterNode {
            node: "n1".into(),
            address: "10.0.0.1".into(),
        },
        Command::RemoveNode { node: "n1".into() },
        Command::Acquire {
            node: "n1".into(),
            tenant: "t1".into(),
            want: amounts(4),
            min: amounts(1),
        },
        Command::Release {
            node: "n1".into(),
            tenant: "t1".into(),
            amounts: amounts(2),
        },
        Command::Heartbeat {
            node: "n1".into(),
            used: vec![("t1".into(), amounts(3)), ("t2".into(), Amounts::ZERO)],
        },
        Command::AuditMembership {
            action: "add member 4".into(),
        },
        Command::Revoke {
            what: Revoked::Serial("0a1b".into()),
        },
        Command::Unrevoke {
            what: Revoked::Identity("agent:n1".into()),
        },
    ];
    for c in &commands {
        match c {
            Command::SetQuota { .. }
            | Command::DeleteQuota { .. }
            | Command::RegisterNode { .. }
            | Command::RemoveNode { .. }
            | Command::Acquire { .. }
            | Command::Release { .. }
            | Command::Heartbeat { .. }
            | Command::AuditMembership { .. }
            | Command::Revoke { .. }
            | Command::Unrevoke { .. } => {}
        }
    }
    commands
}

/// Replies carry views with zero reclaims (left out of JSON, so `Allotment` serializes by
/// hand) and non-zero ones: binary must carry both.
fn view(reclaim: Amounts) -> AllotmentView {
    AllotmentView {
        tenant: "t1".into(),
        allotment: Allotment {
            allotted: amounts(8),
            used: amounts(3),
            reclaim,
        },
        lease_expires_ms: 1_765_000_010_000,
        quota_version: 7,
        as_of: 99,
    }
}

/// One of each reply (same rule as `every_command`).
fn every_reply() -> Vec<Reply> {
    let quota = QuotaRecord {
        limits: limits(None),
        version: 3,
    };
    let replies = vec![
        Reply::Quota {
            tenant: "t1".into(),
            quota: quota.clone(),
        },
        Reply::Done,
        Reply::Registered {
            lease_expires_ms: 1,
            allotments: vec![view(Amounts::ZERO)],
        },
        Reply::Granted {
            granted: amounts(2),
            allotment: view(amounts(1)),
            quota,
        },
        Reply::Released {
            allotment: view(Amounts::ZERO),
        },
        Reply::HeartbeatAck {
            lease_expires_ms: 2,
            allotments: vec![view(Amounts::ZERO), view(amounts(5))],
            unknown: vec!["t9".into()],
        },
        Reply::Error(ApplyError::Insufficient {
            tenant: "t1".into(),
            dim: Dim::MrBytes,
            available: 1,
            min: 2,
        }),
        Reply::Error(ApplyError::Revoked("serial 0a".into())),
    ];
    for r in &replies {
        match r {
            Reply::Quota { .. }
            | Reply::Done
            | Reply::Registered { .. }
            | Reply::Granted { .. }
            | Reply::Released { .. }
            | Reply::HeartbeatAck { .. }
            | Reply::Error(_) => {}
        }
    }
    replies
}

fn proposals() -> Vec<Proposal> {
    every_command()
        .into_iter()
        .enumerate()
        .map(|(i, command)| Proposal {
            actor: "agent:n1".into(),
            command,
            caller: (i % 2 == 0).then(|| Credential {
                serial: "0a1b".into(),
                identity: "agent:n1".into(),
            }),
        })
        .collect()
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(3, 1), index)
}

fn entries() -> Vec<Entry> {
    let request = Request {
        now_ms: 123_456,
        term: 3,
        format: Request::FORMAT,
        wall_ms: 1_765_000_000_000,
        policy: LeasePolicy::default(),
        proposals: proposals(),
    };
    let members = [
        (1, BasicNode::new("127.0.0.1:7101")),
        (2, BasicNode::new("h2:7102")),
    ];
    vec![
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2),
            payload: EntryPayload::Normal(request),
        },
        Entry {
            log_id: log_id(3),
            payload: EntryPayload::Membership(Membership::new(
                vec![[1, 2].into()],
                members
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )),
        },
    ]
}

/// Encodes `v` with `encoding`, decodes it back, and says whether it came back the same (by
/// its debug text: not every openraft type compares).
fn round_trip<T: Serialize + DeserializeOwned + std::fmt::Debug>(encoding: Encoding, v: &T) {
    let bytes = encoding.encode(v).unwrap();
    assert_eq!(Encoding::of(&bytes), encoding);
    let back: T = decode(&bytes).unwrap_or_else(|e| panic!("{v:?}: {e}"));
    assert_eq!(format!("{back:?}"), format!("{v:?}"));
}

#[test]
fn every_payload_survives_both_encodings() {
    for encoding in [Encoding::Binary, Encoding::Json] {
        for entry in entries() {
            round_trip(encoding, &entry);
        }
        round_trip(
            encoding,
            &Response {
                replies: every_reply(),
            },
        );
        round_trip(encoding, &Forwarded::Propose(proposals()));
        round_trip(encoding, &Forwarded::ReadIndex);
        round_trip(encoding, &ForwardReply::Replies(every_reply()));
        round_trip(
            encoding,
            &ForwardReply::Failed {
                message: "not the leader".into(),
                not_leader: true,
            },
        );
        round_trip(
            encoding,
            &AppendEntriesRequest::<TypeConfig> {
                vote: Vote::new_committed(3, 1),
                prev_log_id: Some(log_id(1)),
                entries: entries(),
                leader_commit: Some(log_id(1)),
            },
        );
        let refused: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
            Ok(AppendEntriesResponse::HigherVote(Vote::new(4, 2)));
        round_trip(encoding, &refused);
    }
}

#[test]
fn json_from_earlier_versions_still_reads() {
    // As an earlier version wrote it: no `caller` when there was none, no `qp_types`.
    let old = br#"{"now_ms":5,"policy":{"lease_ttl_ms":1000,"node_dead_ms":9000},"proposals":[{"actor":"admin:a","command":{"SetQuota":{"tenant":"t","limits":{"global":{"qp":4,"mr":null,"mr_bytes":null},"per_node":{"qp":null,"mr":null,"mr_bytes":null},"per_process":{"qp":null,"mr":null,"mr_bytes":null},"max_send_wr":null,"max_recv_wr":null,"wr_policy":"Clamp","qp_create_per_sec":null,"mr_create_per_sec":null}}}}]}"#;
    assert_eq!(Encoding::of(old), Encoding::Json);
    let r: Request = decode(old).unwrap();
    assert_eq!((r.now_ms, r.term, r.format), (5, 0, 0));
    assert_eq!(r.proposals[0].caller, None);
    let Command::SetQuota { limits, .. } = &r.proposals[0].command else {
        panic!("{r:?}");
    };
    assert_eq!(limits.cluster.qp, Some(4));
    assert_eq!(limits.qp_types, None);
}

#[test]
fn binary_is_tagged_and_much_smaller_than_json() {
    let entry = &entries()[1];
    let binary = encode(entry).unwrap();
    let json = Encoding::Json.encode(entry).unwrap();
    assert_eq!(binary[0], BINARY_TAG);
    assert!(
        binary.len() * 2 < json.len(),
        "{} vs {}",
        binary.len(),
        json.len()
    );
    assert!(matches!(
        decode::<Entry>(&binary[..binary.len() - 1]),
        Err(Error::Malformed {
            format: "binary",
            ..
        })
    ));
    assert!(matches!(
        decode::<Entry>(b"{\"log_id\""),
        Err(Error::Malformed { format: "JSON", .. })
    ));
}

fn payload_reply(
    encoding: Encoding,
) -> Result<tonic::Response<rdmaq_proto::raft::RaftPayload>, tonic::Status> {
    encoding.reply(&ForwardReply::ReadIndex(7))
}

#[test]
fn a_peer_gets_binary_only_after_saying_it_reads_it() {
    // A member's answers advertise binary and come in the request's encoding.
    for encoding in [Encoding::Json, Encoding::Binary] {
        let reply = payload_reply(encoding);
        let data = &reply.as_ref().unwrap().get_ref().data;
        assert_eq!(Encoding::of(data), encoding);
        assert!(matches!(decode(data).unwrap(), ForwardReply::ReadIndex(7)));
        assert_eq!(Encoding::Json.after(&reply), Encoding::Binary);
    }
    // An earlier version's answer (no header) changes nothing.
    let old: Result<_, tonic::Status> = Ok(tonic::Response::new(()));
    assert_eq!(Encoding::Json.after(&old), Encoding::Json);
    // A peer that refuses a payload as malformed was replaced by an earlier version: back
    // to JSON. Other failures (unreachable, timeouts) say nothing about it.
    let refused: Result<tonic::Response<()>, _> =
        Err(Status::invalid_argument("malformed binary payload"));
    assert_eq!(Encoding::Binary.after(&refused), Encoding::Json);
    let down: Result<tonic::Response<()>, _> = Err(Status::unavailable("connection refused"));
    assert_eq!(Encoding::Binary.after(&down), Encoding::Binary);
}
