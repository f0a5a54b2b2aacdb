//! Holds QPs under the intercept library's standalone caps without an RDMA device (the
//! library's admission with stand-in objects), for the host-wide cap tests across processes
//! and users: `host-qp-holder N SECONDS` prints `granted K` and keeps them SECONDS. The caps
//! come from the environment, as for any program under the library.
#![forbid(unsafe_code)]

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let granted = rdmaq_intercept::bench::hold_qps(0x1000, n);
    println!("granted {granted}");
    std::thread::sleep(std::time::Duration::from_secs(secs));
}
