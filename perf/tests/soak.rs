//! A short soak of the `polarc-perf` binary: an O_DIRECT file device,
//! every L2 and backing-store fault kind on, short deadlines, a mix of
//! every operation, and `--verify` checking every byte read. ci/soak.sh
//! runs the long one.

use std::process::Command;

#[test]
fn a_short_soak_with_every_fault_serves_no_wrong_byte_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let img = format!("file:{}:64MiB", dir.path().join("soak.img").display());
    let json = dir.path().join("soak.json");
    let t0 = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_polarc-perf"))
        .args([
            "--reactors",
            "2",
            "--l2",
            &img,
            "--keys",
            "20000",
            "--arc",
            "8MiB",
            "--warmup-ops",
            "20000",
            "--ops",
            "100000",
            "--mix",
            "read:70,insert:10,invalidate:10,prefetch:10",
            "--backing",
            "sim:100us",
            "--verify",
            // Probabilities high enough that each kind fires in ~100k
            // operations (feed writes, the ones torn, are few).
            "--faults",
            "eio=0.002,torn=0.2,flip=0.002,hang=0.001:1s,slow=0.01:5ms,seed=1",
            "--backing-faults",
            "fail=0.005,slow=0.01:20ms,hang=0.001,seed=2",
            "--backing-timeout",
            "500ms",
            "--l2-read-deadline",
            "20ms",
            "--l2-write-deadline",
            "300ms",
            "--timeline-interval",
            "500ms",
            "--json",
            json.to_str().unwrap(),
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("run polarc-perf");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}\n(took {:?})", t0.elapsed());
    // The report is written even when the run fails (hung or wrong).
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report")).unwrap();
    let (v, soak, faults) = (&r["verify"], &r["soak"], &r["faults"]);
    println!("verify: {v}\nsoak: {soak}\nfaults: {faults}",);
    assert!(v["reads_checked"].as_u64().unwrap() > 50_000, "{v}");
    assert_eq!(v["wrong"], 0, "wrong bytes: {v}");
    assert_eq!(v["stale"], 0, "stale bytes: {v}");
    assert_eq!(soak["wrong"], 0, "{soak}");
    assert_eq!(soak["hung_ops"], 0, "hung callers: {soak}");
    assert_eq!(soak["pool_outstanding_after_shutdown"], 0, "{soak}");
    assert_eq!(soak["ops"], 120_000, "{soak}");
    for kind in ["eio", "torn", "flip", "hang", "slow"] {
        let n = faults["l2"][kind].as_u64().unwrap();
        assert!(n > 0, "L2 {kind} never injected: {faults}");
    }
    for kind in ["fail", "slow", "hang"] {
        let n = faults["backing"][kind].as_u64().unwrap();
        assert!(n > 0, "backing {kind} never injected: {faults}");
    }
    // Hung backing reads time out; so do hung and slow L2 reads.
    assert!(soak["timeouts"]["backing"].as_u64().unwrap() > 0, "{soak}");
    assert!(soak["timeouts"]["l2_read"].as_u64().unwrap() > 0, "{soak}");
    // Failed reads are the injected ones, and counted apart.
    assert!(v["errors"].as_u64().unwrap() > 0, "{v}");
    let ticks = r["timeline"].as_array().unwrap();
    assert!(ticks.iter().all(|t| t["rss_bytes"].as_u64().unwrap() > 0));
    assert!(soak["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verify: ") && text.contains("soak: hung operations 0"));
}

#[test]
fn a_hung_caller_fails_the_run_after_the_report() {
    // Backing reads that hang, a backing timeout far past the hang limit:
    // the clients give up on them and the run fails, with the report.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("hung.json");
    let out = Command::new(env!("CARGO_BIN_EXE_polarc-perf"))
        .args([
            "--reactors",
            "2",
            "--l2",
            "none",
            "--keys",
            "5000",
            "--arc",
            "4MiB",
            "--warmup-ops",
            "0",
            "--ops",
            "5000",
            "--backing",
            "sim:50us",
            "--backing-faults",
            "hang=0.02",
            "--backing-timeout",
            "60s",
            "--shutdown-timeout",
            "1s",
            "--hang-limit",
            "1s",
            "--json",
            json.to_str().unwrap(),
        ])
        .env("RUST_LOG", "off")
        .output()
        .expect("run polarc-perf");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("operations were still in flight after --hang-limit 1s"),
        "{text}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(r["soak"]["hung_ops"].as_u64().unwrap() > 0, "{}", r["soak"]);
    assert!(r["faults"]["backing"]["hang"].as_u64().unwrap() > 0);
    assert!(r["faults"]["l2"].is_null());
    assert!(r["verify"].is_null());
}
