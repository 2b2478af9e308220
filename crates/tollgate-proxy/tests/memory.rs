//! Bounded memory while streaming. Alone in its own test binary: the peak RSS
//! of the process is the measure, so no other test may run beside it.

mod common;

use common::*;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// A 1 GiB upload through the proxy. The gateway, the upstream and the client
/// share this process, so the growth of its peak RSS bounds what the proxy
/// buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_keeps_memory_flat() {
    let (gw, _up) = echo_gateway(settings()).await;
    upload(&gw, 1).await;
    let before = vm_hwm_kib();
    let started = std::time::Instant::now();
    upload(&gw, 1024).await;
    let took = started.elapsed();
    let after = vm_hwm_kib();
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "1 GiB upload: {took:?} ({:.0} MiB/s); VmHWM {before} kB -> {after} kB (+{growth_mib:.1} MiB)",
        1024.0 / took.as_secs_f64()
    );
    assert!(growth_mib < 64.0, "peak RSS grew by {growth_mib:.1} MiB");
}
