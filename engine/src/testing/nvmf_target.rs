//! A local NVMe-oF TCP target for tests and benchmarks: SPDK's `nvmf_tgt`
//! serving one malloc bdev on 127.0.0.1, started from a generated JSON
//! config and stopped on drop. It lets SPDK's NVMe driver run for real on a
//! machine with no NVMe device.
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The subsystem NQN the target serves.
pub const NQN: &str = "nqn.2016-06.io.polarc:l2";

/// Where SPDK's programs are: `SPDK_DIR/bin`, else the prefix the crate
/// was built against.
pub fn spdk_bin(name: &str) -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("SPDK_DIR") {
        let d = PathBuf::from(d);
        dirs.push(d.join("bin"));
        dirs.push(d.join("build/bin"));
    }
    if let Some(p) = option_env!("POLARC_SPDK_PREFIX") {
        dirs.push(Path::new(p).join("bin"));
        dirs.push(Path::new(p).join("build/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// A running `nvmf_tgt`.
#[derive(Debug)]
pub struct NvmfTarget {
    child: Option<Child>,
    dir: PathBuf,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    size_mb: u64,
    block_size: u32,
    core: usize,
}

impl NvmfTarget {
    /// Starts a target with a `size_mb` malloc bdev of `block_size`-byte
    /// blocks on a free port, its reactor on `core`, without hugepages.
    pub fn start(size_mb: u64, block_size: u32, core: usize) -> Result<NvmfTarget, String> {
        let port = free_port()?;
        Self::start_on(port, size_mb, block_size, core)
    }

    /// As [`NvmfTarget::start`], on a given port.
    pub fn start_on(
        port: u16,
        size_mb: u64,
        block_size: u32,
        core: usize,
    ) -> Result<NvmfTarget, String> {
        let bin = spdk_bin("nvmf_tgt").ok_or("nvmf_tgt not found (set SPDK_DIR)")?;
        let dir = std::env::temp_dir().join(format!("polarc-nvmf-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let blocks = size_mb * (1 << 20) / u64::from(block_size);
        let config = format!(
            r#"{{"subsystems":[
 {{"subsystem":"bdev","config":[{{"method":"bdev_malloc_create","params":{{"name":"Malloc0","num_blocks":{blocks},"block_size":{block_size}}}}}]}},
 {{"subsystem":"nvmf","config":[
  {{"method":"nvmf_create_transport","params":{{"trtype":"TCP"}}}},
  {{"method":"nvmf_create_subsystem","params":{{"nqn":"{NQN}","allow_any_host":true,"serial_number":"POLARC0001"}}}},
  {{"method":"nvmf_subsystem_add_ns","params":{{"nqn":"{NQN}","namespace":{{"bdev_name":"Malloc0"}}}}}},
  {{"method":"nvmf_subsystem_add_listener","params":{{"nqn":"{NQN}","listen_address":{{"trtype":"TCP","adrfam":"IPv4","traddr":"127.0.0.1","trsvcid":"{port}"}}}}}}
 ]}}]}}"#
        );
        let cfg_path = dir.join("tgt.json");
        std::fs::write(&cfg_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("tgt.log")).map_err(|e| e.to_string())?;
        // Memory: the bdev plus room for the target's own pools.
        let mem = size_mb + 512;
        let mask = 1u128
            .checked_shl(u32::try_from(core).unwrap_or(u32::MAX))
            .filter(|_| core < 128)
            .ok_or_else(|| format!("core {core}: SPDK core masks reach core 127"))?;
        let mut cmd = Command::new(&bin);
        // Several targets may share a core (parallel tests): no core locks.
        cmd.arg("--no-huge")
            .arg("--disable-cpumask-locks")
            .args(["-s", &mem.to_string()])
            .args(["-m", &format!("0x{mask:x}")])
            .arg("--json")
            .arg(&cfg_path)
            .arg("-r")
            .arg(dir.join("spdk.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if let Some(lib) = option_env!("POLARC_SPDK_LIBDIR") {
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        let mut t = NvmfTarget {
            child: Some(child),
            dir,
            port,
            size_mb,
            block_size,
            core,
        };
        t.wait_listening(Duration::from_secs(30))?;
        Ok(t)
    }

    fn wait_listening(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("nvmf_tgt exited ({status}): {}", self.log_tail()));
                }
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "nvmf_tgt not listening on port {} after {limit:?}: {}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The transport ID string to connect to it.
    pub fn trid(&self) -> String {
        format!(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{} subnqn:{NQN}",
            self.port
        )
    }

    /// The last lines of the target's log.
    pub fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("tgt.log")) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Kills the target at once (a crash, as the initiator sees it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl NvmfTarget {
    /// Starts the same target again, on the same port, after [`kill`]
    /// (or while it runs): a new process with an empty malloc bdev.
    ///
    /// [`kill`]: NvmfTarget::kill
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let new = Self::start_on(self.port, self.size_mb, self.block_size, self.core)?;
        // The new target uses the same directory: this one must not remove it.
        let old = std::mem::replace(self, new);
        std::mem::forget(old);
        Ok(())
    }
}

impl Drop for NvmfTarget {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM lets it shut down cleanly; then make sure.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}
