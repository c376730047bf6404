//! Integration tests of the `polarc-perf` binary: tiny workloads, the
//! JSON report's fields, trace replay against published numbers, and the
//! error messages for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn perf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_polarc-perf"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run polarc-perf")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `args` with `--json -` added and returns the report.
fn json(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("r.json");
    let mut v = args.to_vec();
    let ps = p.to_str().unwrap().to_string();
    v.extend(["--json", &ps]);
    let o = perf(&v);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

const TINY: &[&str] = &[
    "--keys",
    "2000",
    "--arc",
    "2MiB",
    "--reactors",
    "2",
    "--warmup-ops",
    "4000",
    "--ops",
    "6000",
    "--backing",
    "sim:20us",
];

#[test]
fn a_tiny_run_with_l2_reports_every_field() {
    let mut a = TINY.to_vec();
    a.extend(["--l2", "mem:32MiB", "--timeline-interval", "50ms"]);
    let r = json(&a);
    for k in [
        "ops_per_sec",
        "hit_ratio",
        "latency_us",
        "device",
        "compression_ratio",
        "cpu_seconds_per_op",
        "peak_rss_bytes",
        "hdr_bytes_per_block",
        "stats",
        "timeline",
    ] {
        assert!(!r[k].is_null(), "{k} missing: {r}");
    }
    for k in ["overall", "arc", "l2"] {
        let v = r["hit_ratio"][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    for class in ["arc_hit", "l2_hit", "miss"] {
        for p in ["p50", "p90", "p99", "p999", "max"] {
            assert!(r["latency_us"][class][p].is_number(), "{class}.{p}");
        }
    }
    assert_eq!(r["ops"], 6000);
    assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert!(r["stats"]["l2"]["l2_writes_done"].as_u64().unwrap() > 0);
    assert!(r["stats"]["pool"]["outstanding"].is_number());
    assert!(!r["timeline"].as_array().unwrap().is_empty());
    let h = &r["hit_ratio"];
    let sum = h["arc"].as_f64().unwrap() + h["l2"].as_f64().unwrap();
    assert!((sum - h["overall"].as_f64().unwrap()).abs() < 1e-9);
}

#[test]
fn the_op_mix_hotspot_scan_and_value_ranges_run() {
    let mut a = TINY.to_vec();
    a.extend([
        "--l2",
        "none",
        "--mix",
        "read:70,insert:10,invalidate:10,prefetch:10",
        "--hotspot",
        "0.1:0.9",
        "--scan-share",
        "0.2",
        "--value-size",
        "1KiB-8KiB",
    ]);
    let r = json(&a);
    assert_eq!(r["errors"], 0, "{r}");
    let s = &r["stats"]["requests"];
    for k in [
        "insert_requests",
        "invalidate_requests",
        "prefetch_requests",
    ] {
        assert!(s[k].as_u64().unwrap() > 0, "{k}: {s}");
    }
    assert_eq!(r["workload"]["value_size"], serde_json::json!([1024, 8192]));
}

#[test]
fn the_embedded_default_notes_what_it_fell_back_to() {
    // The default itself, scaled down: the L2 is an io_uring file in a temp
    // directory.
    let o = perf(&["--keys", "2000", "--warmup-ops", "2000", "--ops", "2000"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_eq!(t.matches("note: fell back to: ").count(), 1, "{t}");
    assert!(t.contains("L2: uring:"), "{t}");
    assert!(t.contains("polarc-perf-"), "the temp directory: {t}");
}

#[test]
fn a_config_file_drives_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("perf.toml");
    std::fs::write(
        &cfg,
        "keys = 1000\narc = \"1MiB\"\nl2 = [\"none\"]\nwarmup-ops = 1000\nops = 3000\nzipf = 0\nreactors = 1\n",
    )
    .unwrap();
    let r = json(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(r["ops"], 3000);
    assert_eq!(r["workload"]["keys"], 1000);
    assert_eq!(r["workload"]["popularity"], "Uniform");
}

#[test]
fn bad_input_exits_non_zero_with_a_message_and_no_panic() {
    let cases: &[(&[&str], &str)] = &[
        (&["--arc", "lots"], "lots"),
        (&["--l2", "disk:/x"], "unknown device kind"),
        (&["--backing", "tape:1"], "expected sim:LATENCY"),
        (&["--backing", "sim:5ms-1ms"], "backwards"),
        (&["--compressibility", "0.5"], "--compressibility"),
        (&["--keys", "0"], "at least 1"),
        (&["--trace", "/nonexistent/t.lis"], "/nonexistent/t.lis"),
        (&["--engine", "memcached"], "memcached"),
        (
            &["--reactors", "0", "--l2", "none"],
            "reactors must be at least 1",
        ),
        (&["--l2", "mem:1KiB"], "too small"),
        (&["--bogus"], "--bogus"),
        (&["--rate", "0"], "at least 1 operation per second"),
        (&["--rate", "fast"], "fast: not a number"),
        (&["--arc", "15EiB"], "--arc 15EiB: ARC × 1.5 + 32 MiB"),
        (&["--arc", "16EiB"], "out of range"),
        (
            &[
                "--bench-feed",
                "--l2",
                "mem:64MiB",
                "--keys",
                "9007199254740992",
            ],
            "--keys 9007199254740992 × --value-size 4KiB",
        ),
        (
            &["--queue-depth", "1000000000000"],
            "--queue-depth 1000000000000: at most",
        ),
        (
            &["--reactors", "100000"],
            "--reactors 100000: at most 65535",
        ),
        (&["--cores", "0-99999999999"], "out of range"),
        (&["--duration", "18000000000000000000s"], "--duration"),
        (
            &["--spdk-perf-compare", "--cores", "128"],
            "--cores: core 128 is beyond",
        ),
        (&["--mrc", "1MiB"], "--mrc replays a trace"),
        (
            &["--mrc", "8MiB..1MiB:4", "--trace", "t"],
            "needs 0 < LOW <= HIGH",
        ),
        (&["--mrc", "0", "--trace", "t"], "a size of 0"),
        (&["--target-hit-ratio", "0.9"], "go with --mrc"),
        (
            &["--mrc", "1MiB", "--trace", "t", "--target-hit-ratio", "1.5"],
            "within (0, 1]",
        ),
        (&["--l2-dwpd=-1"], "--l2-dwpd must be a positive"),
        (
            &["--breakdown", "--in-reactor"],
            "--breakdown is for client threads",
        ),
        (&["--l2-dwpd", "0"], "--l2-dwpd must be a positive"),
    ];
    for (args, needle) in cases {
        let o = perf(args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded: {t}");
        assert!(t.contains(needle), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?} panicked: {t}");
    }
}

#[test]
fn malformed_traces_name_the_file_and_the_line_or_record() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let cases: Vec<(PathBuf, &str, String)> = vec![
        (
            write("bad.lis", b"1 2 0 0\nx 1 0 0\n"),
            "lis",
            "bad.lis:2: start \"x\"".into(),
        ),
        (
            write("bad.bin", &[0u8; 30]),
            "oracle",
            "bad.bin: record 1: truncated".into(),
        ),
        (
            write("bad.csv", b"7,100\n8,big\n"),
            "csv",
            "bad.csv:2: size \"big\"".into(),
        ),
        (
            write("empty.keys", b"\n\n"),
            "keys",
            "has no accesses".into(),
        ),
        (
            write(
                "long.lis",
                &[b"1 1 0 0\n".as_slice(), &[b'7'; 100_000]].concat(),
            ),
            "lis",
            "long.lis:2: line longer than 65536 bytes".into(),
        ),
        (
            write("huge.lis", b"0 1048577 0 0\n"),
            "lis",
            "huge.lis:1: block count 1048577 exceeds 1048576".into(),
        ),
    ];
    for (p, format, needle) in cases {
        let ps = p.to_str().unwrap();
        let o = perf(&[
            "--trace",
            ps,
            "--trace-format",
            format,
            "--csv-size-column",
            "1",
            "--l2",
            "none",
        ]);
        let t = text(&o);
        assert!(!o.status.success(), "{ps}: {t}");
        assert!(t.contains(&needle), "{ps}: want {needle:?} in {t}");
        assert!(!t.contains("panicked"), "{t}");
    }
}

/// `--trace-max-bytes` and `--trace-max-accesses` bound a trace; going
/// past them is an error naming the file and the flag.
#[test]
fn trace_limits_are_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.lis.zst");
    let lines = "1 8 0 0\n".repeat(4096);
    std::fs::write(&p, zstd::encode_all(lines.as_bytes(), 3).unwrap()).unwrap();
    let ps = p.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["--trace", ps, "--l2", "none", "--reactors", "1"];
        a.extend(extra);
        perf(&a)
    };
    let o = run(&["--trace-max-bytes", "16KiB"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "{ps}: more than 16KiB of trace data after decompression \
             (raise the limit with --trace-max-bytes SIZE)"
        )),
        "{t}"
    );
    let o = run(&["--trace-max-accesses", "1000"]);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "{ps}:126: more than 1000 accesses (raise the limit with --trace-max-accesses N)"
        )),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}

fn traces() -> Option<PathBuf> {
    let dir = std::env::var_os("POLARC_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"));
    if dir.join("OLTP.lis.zst").exists() {
        Some(dir)
    } else {
        println!(
            "skipped: traces not found in {} (set POLARC_TRACES)",
            dir.display()
        );
        None
    }
}

fn replay(trace: &Path, format: &str, policy: &str, arc: &str) -> serde_json::Value {
    json(&[
        "--trace",
        trace.to_str().unwrap(),
        "--trace-format",
        format,
        "--reactors",
        "1",
        "--l2",
        "none",
        "--policy",
        policy,
        "--arc",
        arc,
    ])
}

#[test]
fn replaying_oltp_reproduces_the_arc_papers_table_iv() {
    let Some(dir) = traces() else { return };
    let t = dir.join("OLTP.lis.zst");
    // (c in 512-byte pages, LRU %, ARC %) from Table IV.
    for (c, lru, arc) in [(1000u64, 32.83, 38.93), (5000, 53.65, 55.25)] {
        let bytes = (c * 512).to_string();
        let got_lru = 100.0
            * replay(&t, "lis", "lru", &bytes)["hit_ratio"]["arc"]
                .as_f64()
                .unwrap();
        let got_arc = 100.0
            * replay(&t, "lis", "arc", &bytes)["hit_ratio"]["arc"]
                .as_f64()
                .unwrap();
        println!("OLTP c={c}: LRU {got_lru:.4} (paper {lru}), ARC {got_arc:.4} (paper {arc})");
        assert!((got_lru - lru).abs() < 0.006, "LRU at c={c}: {got_lru}");
        assert!((got_arc - arc).abs() < 0.05, "ARC at c={c}: {got_arc}");
    }
}

#[test]
fn replaying_cloudphysics_reproduces_libcachesims_lru_misses() {
    let Some(dir) = traces() else { return };
    let t = dir.join("cloudPhysicsIO.oracleGeneral.bin");
    for (mib, misses) in [(128, 93374u64), (1024, 71704)] {
        let r = replay(&t, "oracle", "lru", &format!("{mib}MiB"));
        let got = r["stats"]["arc"]["misses"].as_u64().unwrap();
        println!("cloudPhysics {mib} MiB: LRU misses {got} (libCacheSim {misses})");
        assert_eq!(got, misses, "LRU misses at {mib} MiB");
        assert_eq!(r["stats"]["pool"]["alloc_fail"], 0);
    }
}

/// `--breakdown` splits each client read's latency into parts that add
/// up to it: the service of a miss holds the store's latency, and each
/// class's parts count its reads.
#[test]
fn a_breakdown_splits_client_latency_into_its_parts() {
    let mut a = TINY.to_vec();
    a.extend(["--l2", "none", "--backing", "sim:300us", "--breakdown"]);
    let r = json(&a);
    let b = &r["breakdown_us"];
    for class in ["arc_hit", "miss"] {
        let n = r["latency_us"][class]["count"].as_u64().unwrap();
        assert!(n > 0, "{r}");
        for part in ["late", "to_reactor", "service", "to_client"] {
            assert_eq!(
                b[class][part]["count"].as_u64().unwrap(),
                n,
                "{class} {part}"
            );
        }
    }
    let p50 = |c: &str, p: &str| b[c][p]["p50"].as_f64().unwrap();
    assert!(p50("miss", "service") >= 300.0, "{b}");
    assert!(p50("arc_hit", "service") < 300.0, "{b}");
    // A part of a read cannot take longer than the slowest whole read.
    let max = r["latency_us"]["miss"]["max"].as_f64().unwrap();
    assert!(
        ["late", "to_reactor", "service", "to_client"]
            .iter()
            .all(|p| p50("miss", p) <= max),
        "{b}"
    );
    let plain = json(TINY);
    assert!(plain["breakdown_us"].is_null());
}

/// A zipf-like trace of `n` accesses over `ids` ids, one key per line.
fn keys_trace(dir: &Path, n: u64, ids: u64) -> PathBuf {
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut text = String::new();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Squaring a uniform number skews it towards small ids.
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        text += &format!("{}\n", (u * u * ids as f64) as u64);
    }
    let p = dir.join("t.keys");
    std::fs::write(&p, text).unwrap();
    p
}

/// The miss-ratio curve, the replay on the reactors and the replay
/// through Engine::read give the same hits at every size: the same Shard
/// code, each shard seeing its accesses in trace order.
#[test]
fn the_mrc_equals_the_engines_replay_at_every_size() {
    let dir = tempfile::tempdir().unwrap();
    let t = keys_trace(dir.path(), 20_000, 4_000);
    let t = t.to_str().unwrap();
    let common = [
        "--trace",
        t,
        "--trace-format",
        "keys",
        "--value-size",
        "4096",
        "--reactors",
        "2",
    ];
    let mut a = common.to_vec();
    a.extend(["--mrc", "1MiB,4MiB,12MiB", "--mrc-l2", "8MiB"]);
    a.extend(["--target-hit-ratio", "0.5", "--sizing-rate", "10000"]);
    let plot = dir.path().join("mrc.svg");
    let plot_s = plot.to_str().unwrap().to_string();
    a.extend(["--plot", &plot_s]);
    let m = json(&a);
    let pts = m["mrc"].as_array().unwrap();
    // arc × (no L2, 8 MiB) × 3 sizes, and lru × 3 sizes.
    assert_eq!(pts.len(), 9, "{m}");
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
    let mut last = -1.0;
    for p in pts
        .iter()
        .filter(|p| p["policy"] == "arc" && p["l2_bytes"] == 0)
    {
        let arc = p["arc_bytes"].as_u64().unwrap().to_string();
        let hits = p["arc_hits"].as_u64().unwrap();
        let ratio = p["hit_ratio"].as_f64().unwrap();
        assert!(ratio > last, "the curve rises with size: {pts:?}");
        last = ratio;
        for extra in [&[][..], &["--replay-through-clients"][..]] {
            let mut r = common.to_vec();
            r.extend(["--l2", "none", "--arc", &arc]);
            r.extend(extra);
            let e = json(&r);
            assert_eq!(
                e["stats"]["arc"]["hits"].as_u64().unwrap(),
                hits,
                "{arc} {extra:?}"
            );
        }
    }
    // The same keys as plain binary u64s give the same curve.
    let ids: Vec<u8> = std::fs::read_to_string(t)
        .unwrap()
        .lines()
        .flat_map(|l| l.parse::<u64>().unwrap().to_le_bytes())
        .collect();
    let bin = dir.path().join("t.bin");
    std::fs::write(&bin, ids).unwrap();
    let b = json(&[
        "--trace",
        bin.to_str().unwrap(),
        "--trace-format",
        "bin-keys",
        "--value-size",
        "4096",
        "--reactors",
        "2",
        "--mrc",
        "1MiB,4MiB,12MiB",
        "--mrc-policies",
        "arc",
    ]);
    let hits = |v: &serde_json::Value| -> Vec<u64> {
        v["mrc"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["policy"] == "arc" && p["l2_bytes"] == 0)
            .map(|p| p["arc_hits"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(hits(&b), hits(&m));
    // ARC + an 8 MiB L2 beats ARC alone at 1 MiB.
    let at = |l2: u64| {
        pts.iter()
            .find(|p| p["policy"] == "arc" && p["arc_bytes"] == 1 << 20 && p["l2_bytes"] == l2)
            .unwrap()["hit_ratio"]
            .as_f64()
            .unwrap()
    };
    assert!(at(8 << 20) > at(0) + 0.05, "{pts:?}");
    let advice = &m["advice"];
    assert!(
        advice["arc_only"]["point"]["hit_ratio"].as_f64().unwrap() >= 0.5,
        "{advice}"
    );
    assert!(
        advice["arc_l2"]["l2_dwpd"].as_f64().unwrap() > 0.0,
        "{advice}"
    );
}

#[test]
fn a_plot_a_file_store_and_a_duration_work() {
    let dir = tempfile::tempdir().unwrap();
    // A backing file of 500 values of 4 KiB.
    let store = dir.path().join("store.bin");
    std::fs::write(&store, vec![7u8; 500 * 4096]).unwrap();
    let svg = dir.path().join("out.svg");
    let backing = format!("file:{}", store.display());
    let r = json(&[
        "--keys",
        "500",
        "--arc",
        "1MiB",
        "--l2",
        "mem:16MiB",
        "--backing",
        &backing,
        "--warmup-ops",
        "1000",
        "--duration",
        "400ms",
        "--timeline-interval",
        "100ms",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["seconds"].as_f64().unwrap() >= 0.4);
    assert!(
        r["timeline"].as_array().unwrap().len() >= 3,
        "{}",
        r["timeline"]
    );
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(
        s.starts_with("<svg") && s.contains("latency CDF"),
        "{}",
        &s[..200.min(s.len())]
    );
    // A file too small for --keys is refused.
    let o = perf(&["--keys", "501", "--backing", &backing, "--l2", "none"]);
    assert!(
        !o.status.success() && text(&o).contains("fewer than --keys 501"),
        "{}",
        text(&o)
    );
}

#[test]
fn in_reactor_jobs_report_latency_per_class_with_zipf_keys() {
    let mut a = TINY.to_vec();
    a.extend(["--l2", "mem:32MiB", "--in-reactor", "--zipf", "0.9"]);
    let r = json(&a);
    assert_eq!(r["ops"], 6000);
    let l = &r["latency_us"];
    let counts: u64 = ["arc_hit", "l2_hit", "miss"]
        .iter()
        .map(|c| l[c]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counts, 6000, "{l}");
    assert!(l["arc_hit"]["count"].as_u64().unwrap() > 0);
    assert!(
        l["miss"]["p50"].as_f64().unwrap() >= 20.0,
        "misses wait for the 20 us store: {l}"
    );
}

/// One client, one request at a time, nearly every read a miss on a 2 ms
/// store.
const ONE_MISS_AT_A_TIME: &[&str] = &[
    "--keys",
    "100000",
    "--arc",
    "2MiB",
    "--reactors",
    "1",
    "--l2",
    "none",
    "--backing",
    "sim:2ms",
    "--clients",
    "1",
    "--queue-depth",
    "1",
    "--warmup-ops",
    "0",
];

/// Open loop: a rate the engine meets is paced (the run lasts ops/rate)
/// and kept up with; one it cannot meet says so, and its latency counts
/// the time each operation waited past its intended start.
#[test]
fn open_loop_runs_pace_themselves_and_count_waiting_in_latency() {
    for driver in [&[][..], &["--in-reactor"][..]] {
        let mut a = TINY.to_vec();
        a.extend(["--rate", "4000", "--arrivals", "fixed"]);
        a.extend(driver);
        let r = json(&a);
        let rate = &r["rate"];
        assert_eq!(rate["target"], 4000.0, "{driver:?}: {rate}");
        assert_eq!(rate["kept_up"], true, "{driver:?}: {rate}");
        let achieved = rate["achieved"].as_f64().unwrap();
        assert!((3000.0..4400.0).contains(&achieved), "{driver:?}: {rate}");
        // 6000 operations at 4000/s take about 1.5 s.
        assert!(r["seconds"].as_f64().unwrap() > 1.2, "{driver:?}: {r}");
    }
    // One client, one request at a time, a 2 ms store: about 500 misses/s
    // at most, against 2000/s asked.
    let r = json(&[ONE_MISS_AT_A_TIME, &["--ops", "300", "--rate", "2000"]].concat());
    let rate = &r["rate"];
    assert_eq!(rate["kept_up"], false, "{rate}");
    assert!(rate["achieved"].as_f64().unwrap() < 1000.0, "{rate}");
    assert!(rate["issued_late"].as_u64().unwrap() > 200, "{rate}");
    // Closed loop, a miss takes about 2 ms; here most waited far longer for
    // their turn, and that counts.
    let p50 = r["latency_us"]["miss"]["p50"].as_f64().unwrap();
    assert!(p50 > 20_000.0, "miss p50 {p50} us: the wait is not counted");
    // Closed loop, the same run reports no rate.
    let r = json(&[ONE_MISS_AT_A_TIME, &["--ops", "100"]].concat());
    assert!(r["rate"].is_null());
    assert!(r["latency_us"]["miss"]["p50"].as_f64().unwrap() < 20_000.0);
}

#[test]
fn a_rate_sweep_reports_latency_against_load_and_the_best_rate() {
    let mut a = TINY.to_vec();
    a.extend([
        "--in-reactor",
        "--rate-sweep",
        "1s",
        "--sweep-class",
        "arc-hit",
        // Fixed gaps: a Poisson schedule of 6000 operations may run a few
        // percent long by chance, which would read as falling behind.
        "--arrivals",
        "fixed",
    ]);
    let r = json(&a);
    let s = &r["sweep"];
    assert_eq!(s["class"], "arc_hit", "{s}");
    assert_eq!(s["p99_target_us"], 1e6);
    let closed = s["closed_loop_ops_per_sec"].as_f64().unwrap();
    assert_eq!(closed, r["ops_per_sec"].as_f64().unwrap());
    let points = s["points"].as_array().unwrap();
    assert_eq!(points.len(), 7);
    let first = points[0]["rate"]["target"].as_f64().unwrap();
    assert!((first - closed / 4.0).abs() < 1.0, "{s}");
    // Every rate of a second's p99 is met where the engine kept up; at a
    // quarter of its closed-loop throughput it does.
    let best = s["max_rate"].as_f64().unwrap();
    assert!(best >= first, "{s}");
    // A target no read meets: no rate.
    let mut a = TINY.to_vec();
    a.extend(["--in-reactor", "--rate-sweep", "1ns"]);
    assert!(json(&a)["sweep"]["max_rate"].is_null());
}
