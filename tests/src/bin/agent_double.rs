//! A stand-in for rdmaq-agent's admission socket, speaking the real intercept protocol
//! (rdmaq-proto), for testing the library's agent mode before the agent exists. One tenant
//! with a QP and an MR budget shared by all connections; a connection's unreturned tokens
//! come back when it closes. Prints one line per request to stdout.
//!
//!     agent-double SOCKET QP_BUDGET MR_BUDGET [--max-send-wr N] [--hang]
#![forbid(unsafe_code)]

use std::{
    io::{Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    sync::{Arc, Mutex},
    thread,
};

use rdmaq_proto::{
    frame,
    intercept::{self as msg, Resource, Verdict, request, response},
};

#[derive(Default)]
struct Budget {
    qp_left: u64,
    qp_limit: u64,
    mr_left: u64,
    mr_limit: u64,
}

struct Options {
    max_send_wr: Option<u32>,
    hang: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "agent-double SOCKET QP_BUDGET MR_BUDGET [--max-send-wr N] [--hang]";
    let (Some(path), Some(qp), Some(mr)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: {usage}");
        std::process::exit(2);
    };
    let qp: u64 = qp.parse().expect("QP_BUDGET is a number");
    let mr: u64 = mr.parse().expect("MR_BUDGET is a number");
    let opts = Arc::new(Options {
        max_send_wr: args
            .iter()
            .position(|a| a == "--max-send-wr")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok()),
        hang: args.iter().any(|a| a == "--hang"),
    });
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).expect("binding the socket");
    println!("listening {path}");
    let budget = Arc::new(Mutex::new(Budget {
        qp_left: qp,
        qp_limit: qp,
        mr_left: mr,
        mr_limit: mr,
    }));
    for conn in listener.incoming().flatten() {
        let (budget, opts) = (budget.clone(), opts.clone());
        thread::spawn(move || serve(conn, &budget, &opts));
    }
}

fn read_request(conn: &mut UnixStream) -> Option<msg::Request> {
    let mut header = [0u8; frame::HEADER_LEN];
    conn.read_exact(&mut header).ok()?;
    let len = frame::body_len(header).ok()?;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).ok()?;
    frame::decode(&body).ok()
}

fn serve(mut conn: UnixStream, budget: &Mutex<Budget>, opts: &Options) {
    let (mut held_qp, mut held_mr) = (0u64, 0u64);
    while let Some(req) = read_request(&mut conn) {
        if opts.hang {
            println!("hanging on request {}", req.seq);
            thread::park();
        }
        let body = match req.body {
            Some(request::Body::Hello(h)) => {
                println!("hello launcher_tenant={:?}", h.launcher_tenant);
                response::Body::Hello(msg::HelloReply {
                    tenant: "double-tenant".into(),
                    max_send_wr: opts.max_send_wr,
                    ..Default::default()
                })
            }
            Some(request::Body::Admit(a)) => {
                let mut b = budget.lock().unwrap();
                let resource = Resource::try_from(a.resource).unwrap_or(Resource::Unspecified);
                let (left, limit, held) = match resource {
                    Resource::Qp => (&mut b.qp_left, 0, &mut held_qp),
                    Resource::Mr => (&mut b.mr_left, 1, &mut held_mr),
                    _ => {
                        println!("report {resource:?} created");
                        let reply = response::Body::Admit(msg::AdmitReply {
                            verdict: Verdict::Allow as i32,
                            granted: 1,
                            ..Default::default()
                        });
                        send(&mut conn, req.seq, reply);
                        continue;
                    }
                };
                let want = u64::from(a.prefetch.max(1));
                let granted = want.min(*left);
                *left -= granted;
                *held += granted;
                let limit = if limit == 0 { b.qp_limit } else { b.mr_limit };
                println!(
                    "admit {resource:?} prefetch={} granted={granted}",
                    a.prefetch
                );
                response::Body::Admit(msg::AdmitReply {
                    verdict: if granted > 0 {
                        Verdict::Allow
                    } else {
                        Verdict::DenyQuota
                    } as i32,
                    granted: granted as u32,
                    granted_bytes: if granted > 0 {
                        a.bytes.saturating_mul(granted)
                    } else {
                        0
                    },
                    used: limit,
                    limit,
                    ..Default::default()
                })
            }
            Some(request::Body::Release(r)) => {
                let mut b = budget.lock().unwrap();
                let resource = Resource::try_from(r.resource).unwrap_or(Resource::Unspecified);
                let n = u64::from(r.count);
                match resource {
                    Resource::Qp => {
                        b.qp_left += n.min(held_qp);
                        held_qp -= n.min(held_qp);
                    }
                    Resource::Mr => {
                        b.mr_left += n.min(held_mr);
                        held_mr -= n.min(held_mr);
                    }
                    _ => {}
                }
                println!("release {resource:?} count={n}");
                response::Body::Release(msg::ReleaseReply {})
            }
            None => response::Body::Error(msg::ErrorReply {
                message: "empty request".into(),
            }),
        };
        send(&mut conn, req.seq, body);
    }
    // The process is gone: everything it held comes back.
    let mut b = budget.lock().unwrap();
    b.qp_left += held_qp;
    b.mr_left += held_mr;
    println!("closed, returned qp={held_qp} mr={held_mr}");
}

fn send(conn: &mut UnixStream, seq: u64, body: response::Body) {
    let resp = msg::Response {
        seq,
        body: Some(body),
    };
    if let Ok(bytes) = frame::encode(&resp) {
        let _ = conn.write_all(&bytes);
    }
}
