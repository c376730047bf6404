//! With the `spdk` feature: links SPDK's shared libraries into this
//! crate's tests and benches (see spdk-sys), lets them find the libraries
//! at run time (an rpath), and tells the SPDK code where SPDK's programs
//! are (`nvmf_tgt`, `spdk_nvme_perf`).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_SPDK_LIBDIR");
    if let Ok(group) = std::env::var("DEP_SPDK_LINK_GROUP") {
        // SPDK's shared libraries, kept whether referenced or not.
        println!("cargo:rustc-link-arg-tests={group}");
        println!("cargo:rustc-link-arg-benches={group}");
    }
    if let Ok(libdir) = std::env::var("DEP_SPDK_LIBDIR") {
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{libdir}");
        println!("cargo:rustc-link-arg-benches=-Wl,-rpath,{libdir}");
        println!("cargo:rustc-env=POLARC_SPDK_LIBDIR={libdir}");
    }
    if let Ok(prefix) = std::env::var("DEP_SPDK_PREFIX") {
        println!("cargo:rustc-env=POLARC_SPDK_PREFIX={prefix}");
    }
}
