//! `env/setup.sh` against fake sysfs/procfs trees (the checks live in
//! `env/tests/setup_test.sh`, which `bash` runs here so `cargo test` covers
//! the bind, refuse, reset and dry-run logic).

#[test]
fn env_setup_script_passes_its_fake_tree_checks() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../env/tests/setup_test.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "env/setup.sh checks failed:\n{text}");
    assert!(text.contains("checks passed"), "{text}");
}
