//! `polarc-perf --l2 spdk:…` end to end: the harness starts SPDK's
//! `nvmf_tgt` on 127.0.0.1 (`spdk:nvmf:SIZE`), runs a small workload whose
//! L2 is that NVMe-oF namespace, and reports L2 hits in its JSON.

#[cfg(not(feature = "spdk"))]
#[test]
fn spdk_cli() {
    println!("skipped: SPDK not found (set SPDK_DIR)");
}

#[cfg(feature = "spdk")]
#[test]
fn runs_a_workload_on_an_spdk_l2() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_polarc-perf"))
        .args([
            "--keys",
            "20000",
            "--value-size",
            "4096",
            "--compressibility",
            "2",
            "--zipf",
            "0.9",
            "--arc",
            "8MiB",
            "--reactors",
            "1",
            "--l2",
            "spdk:nvmf:256MiB",
            "--l2-write-max",
            "1GiB",
            "--warmup-ops",
            "40000",
            "--ops",
            "40000",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("started nvmf_tgt"), "{text}");
    assert!(text.contains("spdk:TCP:127.0.0.1:"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let l2 = v["hit_ratio"]["l2"].as_f64().unwrap();
    assert!(l2 > 0.05, "L2 hit ratio {l2}");
    assert_eq!(v["stats"]["l2"]["l2_cksum_bad"], 0);
    assert_eq!(v["stats"]["l2"]["l2_io_error"], 0);
    // A target that cannot be reached is a clear error.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_polarc-perf"))
        .args([
            "--l2",
            "spdk:trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:1 subnqn:x",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("could not connect"), "{err}");
}
