//! Finds SPDK through pkg-config (`SPDK_DIR`, or `PKG_CONFIG_PATH`), links
//! it, and generates bindings for the env, NVMe, DMA and mempool APIs.

use std::env;
use std::path::PathBuf;

/// The pkg-config modules the NVMe driver needs: the driver, the DPDK env,
/// and the socket modules (NVMe/TCP) that register themselves at load time.
const MODULES: &[&str] = &[
    "spdk_nvme",
    "spdk_env_dpdk",
    "spdk_sock_posix",
    "spdk_syslibs",
];

fn main() {
    println!("cargo:rerun-if-env-changed=SPDK_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-changed=wrapper.h");
    let statik = env::var_os("CARGO_FEATURE_STATIC").is_some();

    if let Some(dir) = env::var_os("SPDK_DIR") {
        // An installed prefix (lib/pkgconfig) or a build tree (build/lib/pkgconfig).
        let dir = PathBuf::from(dir);
        let mut paths: Vec<PathBuf> =
            vec![dir.join("lib/pkgconfig"), dir.join("build/lib/pkgconfig")];
        if let Some(old) = env::var_os("PKG_CONFIG_PATH") {
            paths.extend(env::split_paths(&old));
        }
        let joined = env::join_paths(paths).expect("SPDK_DIR is a valid path");
        env::set_var("PKG_CONFIG_PATH", joined);
    }

    let mut cfg = pkg_config::Config::new();
    cfg.cargo_metadata(false).statik(statik);
    let mut include = Vec::new();
    let mut libdirs: Vec<PathBuf> = Vec::new();
    let mut libs: Vec<String> = Vec::new();
    for m in MODULES {
        // SPDK's shared libraries do not record their own system
        // dependencies (OpenSSL, libaio, libuuid, …): spdk_syslibs lists
        // them, as private libraries.
        let lib = if *m == "spdk_syslibs" {
            let mut sys = pkg_config::Config::new();
            sys.cargo_metadata(false).statik(true);
            sys.probe(m)
        } else {
            cfg.probe(m)
        };
        let lib = lib.unwrap_or_else(|e| {
            panic!(
                "SPDK not found: pkg-config could not find {m} ({e}).\n\
                 Set SPDK_DIR to an SPDK install prefix, or add its lib/pkgconfig \
                 to PKG_CONFIG_PATH. The default build does not need SPDK: \
                 only the `spdk` feature does."
            )
        });
        for p in lib.include_paths {
            if !include.contains(&p) {
                include.push(p);
            }
        }
        for p in lib.link_paths {
            if !libdirs.contains(&p) {
                libdirs.push(p);
            }
        }
        for l in lib.libs {
            if !libs.contains(&l) {
                libs.push(l);
            }
        }
    }
    let spdk_libdir = spdk_libdir_of(&libdirs);
    for d in &libdirs {
        println!("cargo:rustc-link-search=native={}", d.display());
    }
    if statik {
        for l in &libs {
            if l.starts_with("spdk_") {
                println!("cargo:rustc-link-lib=static:+whole-archive,-bundle={l}");
            } else {
                println!("cargo:rustc-link-lib={l}");
            }
        }
    } else {
        for l in &libs {
            println!("cargo:rustc-link-lib={l}");
        }
        // SPDK's shared libraries do not record their own dependencies
        // (DPDK, OpenSSL), and its socket module registers itself from a
        // constructor and exports nothing: rustc's --as-needed would drop
        // them all. Dependents put this group on their final link
        // (DEP_SPDK_LINK_GROUP; see the engine's build.rs).
        let mut group = String::from("-Wl,--push-state,--no-as-needed");
        for d in &libdirs {
            group.push_str(&format!(",-L{}", d.display()));
        }
        for l in &libs {
            group.push_str(&format!(",-l{l}"));
        }
        group.push_str(",--pop-state");
        println!("cargo:link_group={group}");
    }
    println!("cargo:libdir={}", spdk_libdir.display());
    let prefix = spdk_libdir.parent().unwrap_or(&spdk_libdir);
    println!("cargo:prefix={}", prefix.display());

    let mut b = bindgen::Builder::default()
        .header("wrapper.h")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("spdk_env_.*")
        .allowlist_function("spdk_nvme_.*")
        .allowlist_function("spdk_(dma|zmalloc|zmalloc_|malloc|free|realloc).*")
        .allowlist_function("spdk_zmalloc|spdk_malloc|spdk_free|spdk_dma_.*")
        .allowlist_function("spdk_mempool_.*")
        .allowlist_function("spdk_mem_(register|unregister)")
        .allowlist_function("spdk_vtophys")
        .allowlist_function("spdk_pci_addr_(parse|fmt)")
        .allowlist_function("spdk_log_set_(level|print_level)")
        .allowlist_function("spdk_log_open")
        // To format SPDK's log lines (their arguments come as a va_list).
        .allowlist_function("vsnprintf")
        .allowlist_type("spdk_nvme_.*")
        .allowlist_type("spdk_env_opts")
        .allowlist_var("SPDK_(MALLOC|ENV|NVME|MEMPOOL)_.*")
        .allowlist_var("SPDK_VERSION_.*")
        // Packed structs with bitfields that bindgen cannot lay out
        // faithfully; nothing here reads them.
        .opaque_type("spdk_nvme_ctrlr_data")
        .opaque_type("spdk_nvme_ns_data")
        .opaque_type("spdk_nvme_health_information_page")
        .opaque_type("spdk_nvme_feat_.*")
        .opaque_type("spdk_nvme_sgl_descriptor")
        .opaque_type("spdk_nvme_cmd")
        .opaque_type("spdk_nvme_registered_ctrlr_.*")
        .opaque_type("spdk_nvme_reservation_status_.*")
        .opaque_type("spdk_nvme_zns_.*")
        .opaque_type("spdk_nvme_cdata_.*")
        .opaque_type("spdk_nvme_(intel|ocssd).*")
        .opaque_type("spdk_nvme_tcp_.*")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false);
    for p in &include {
        b = b.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = b.generate().expect("bindgen failed on SPDK's headers");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}

/// The directory holding SPDK's own libraries (not DPDK's).
fn spdk_libdir_of(libdirs: &[PathBuf]) -> PathBuf {
    libdirs
        .iter()
        .find(|d| d.join("libspdk_nvme.so").exists() || d.join("libspdk_nvme.a").exists())
        .cloned()
        .unwrap_or_else(|| libdirs[0].clone())
}
