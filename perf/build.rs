//! With the `spdk` feature: links SPDK's shared libraries into the binary
//! and the tests (see spdk-sys), and lets them find the libraries at run
//! time (an rpath).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_SPDK_LINK_GROUP");
    if let Ok(group) = std::env::var("DEP_SPDK_LINK_GROUP") {
        println!("cargo:rustc-link-arg-bins={group}");
        println!("cargo:rustc-link-arg-tests={group}");
    }
    if let Ok(libdir) = std::env::var("DEP_SPDK_LIBDIR") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{libdir}");
        println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{libdir}");
        println!("cargo:rustc-env=POLARC_SPDK_LIBDIR={libdir}");
    }
}
