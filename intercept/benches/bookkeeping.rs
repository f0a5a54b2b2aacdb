//! The intercept library's own work around each verb, timed natively: admission, the
//! process's ledger, the host-wide QP table, release — everything an interposed
//! `ibv_create_qp`+`ibv_destroy_qp` or `ibv_reg_mr`+`ibv_dereg_mr` pair adds, with the verb
//! itself replaced by a stand-in that costs nothing. The lab's VMs measure the ratio with the
//! real verbs, but under software emulation, which inflates this part far more than the
//! kernel work it is compared with; this says what it costs on the machine itself.
//!
//! ```sh
//! cargo bench -p rdmaq-intercept --bench bookkeeping
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use rdmaq_intercept::bench::{mr_cycle, qp_cycle};

fn bookkeeping(c: &mut Criterion) {
    let table = std::env::temp_dir().join(format!("rdmaq-bench-host-{}", std::process::id()));
    // SAFETY: set before any thread of this process reads the environment (criterion has
    // not started any, and the library reads its configuration on first use, below).
    unsafe {
        std::env::set_var("RDMA_INTERCEPT_ENABLE_QP_CONTROL", "1");
        std::env::set_var("RDMA_INTERCEPT_LOG_FILE_PATH", "/dev/null");
        std::env::set_var("RDMAQ_HOST_STATE", &table);
        std::env::set_var("RDMAQ_AGENT_SOCKET", "/nonexistent/rdmaq-bench.sock");
    }
    assert!(qp_cycle(0x1000), "the standalone caps refused a QP");
    assert!(
        mr_cycle(0x2000, 64 << 10),
        "the standalone caps refused an MR"
    );
    let mut g = c.benchmark_group("standalone, per create+destroy pair");
    g.bench_function("qp (per-process and host-wide caps)", |b| {
        b.iter(|| qp_cycle(std::hint::black_box(0x1000)))
    });
    g.bench_function("mr 64 KiB (count and bytes caps)", |b| {
        b.iter(|| mr_cycle(std::hint::black_box(0x2000), 64 << 10))
    });
    g.finish();
    let _ = std::fs::remove_file(table);
}

criterion_group!(benches, bookkeeping);
criterion_main!(benches);
