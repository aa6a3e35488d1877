//! What every test of the program needs, written once: the binaries under
//! test, a private runtime directory ([`Dir`]) that commands run in, fixture
//! processes killed on drop ([`Proc`]), waiting for a condition with a
//! deadline ([`poll`]), reading a command's output ([`ok`], [`json`]) and
//! the preload library ([`preload`]).

use serde_json::Value;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The program under test.
pub const TRACER: &str = env!("CARGO_BIN_EXE_tracer");
/// A small program that links the tracer crate (src/bin/tracer-fixture.rs).
pub const FIXTURE: &str = env!("CARGO_BIN_EXE_tracer-fixture");
/// The demo service.
pub const DEMO: &str = env!("CARGO_BIN_EXE_tracer-demo");

/// Generous: only bounds how long a broken test takes to fail.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The workspace's root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The directory `tracer` was built in (`<target>/<profile>/`), where
/// `tracer run` looks for the preload library.
pub fn bin_dir() -> PathBuf {
    Path::new(TRACER).parent().unwrap().to_path_buf()
}

/// The workspace's target directory (`tracer` is in its `<profile>/`).
pub fn target_dir() -> PathBuf {
    Path::new(TRACER)
        .parent()
        .and_then(Path::parent)
        .expect("tracer is in <target>/<profile>/")
        .to_path_buf()
}

/// The preload library (`libtracer_preload.so`), built once per test
/// process next to `tracer` (same profile), where `tracer run` expects it.
pub fn preload() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = bin_dir();
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(["build", "-q", "-p", "tracer-preload", "--manifest-path"])
            .arg(workspace_root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir())
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        if dir.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        let st = c.status().expect("cargo runs");
        assert!(st.success(), "cargo build -p tracer-preload failed");
        let lib = dir.join("libtracer_preload.so");
        assert!(lib.is_file(), "{} was not built", lib.display());
        lib
    })
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A private runtime directory (`XDG_RUNTIME_DIR`: the agents' sockets),
/// so tests never see each other's processes or other programs of this
/// user that link the tracer crate. Removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    /// A new empty directory (mode 0700).
    pub fn new() -> Dir {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!(
            "tracer-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        Dir(p)
    }

    /// [`Dir::new`] with its socket directory made (mode 0700).
    pub fn with_sockets() -> Dir {
        use std::os::unix::fs::PermissionsExt;
        let d = Dir::new();
        std::fs::create_dir_all(d.sockets()).unwrap();
        std::fs::set_permissions(d.sockets(), std::fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    /// Where the agents put their sockets.
    pub fn sockets(&self) -> PathBuf {
        self.0.join("tracer")
    }

    /// The socket of process `pid`'s agent.
    pub fn sock(&self, pid: u32) -> PathBuf {
        self.sockets().join(format!("{pid}.sock"))
    }

    /// A command that runs in this directory, without colour and without
    /// anything of the tests' own environment that steers the tracer.
    pub fn cmd(&self, exe: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(exe);
        c.env("XDG_RUNTIME_DIR", &self.0)
            .env("NO_COLOR", "1")
            .env_remove("TRACER_AGENT")
            .env_remove("TRACER_ENABLE")
            .env_remove("TRACER_PRELOAD")
            .env_remove("TRACER_METRICS")
            .env_remove("LD_PRELOAD");
        c
    }

    /// [`Dir::cmd`] with `args`.
    pub fn cmd_args(&self, exe: impl AsRef<OsStr>, args: &[&str]) -> Command {
        let mut c = self.cmd(exe);
        c.args(args);
        c
    }

    /// Run the program to its end.
    pub fn tracer(&self, args: &[&str]) -> Output {
        self.cmd(TRACER).args(args).output().unwrap()
    }

    /// Run the program to its end; killed and reported if it takes longer
    /// than `limit` (its pipes are drained meanwhile, so a chatty program
    /// cannot block).
    pub fn tracer_within(&self, limit: Duration, args: &[&str]) -> Output {
        let t0 = Instant::now();
        let mut child = self
            .cmd(TRACER)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let o = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let e = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tracer {args:?} hung for {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Output {
            status,
            stdout: o.join().unwrap(),
            stderr: e.join().unwrap(),
        }
    }

    /// Start `exe` (stdout discarded, stderr collected) with `env` added.
    pub fn spawn(&self, exe: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut c = self.cmd(exe);
        c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        Proc::new(c.spawn().unwrap())
    }

    /// Start `c` (a fixture command: stdout discarded, stderr collected)
    /// and wait for its agent's socket.
    pub fn start(&self, mut c: Command) -> Proc {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let p = Proc::new(c.spawn().unwrap());
        let sock = self.sock(p.pid());
        poll(|| sock.exists(), "the fixture's agent socket");
        p
    }

    /// The fixture with `args`, once its agent's socket is there.
    pub fn fixture(&self, args: &[&str]) -> Proc {
        let mut c = self.cmd(FIXTURE);
        c.args(args);
        self.start(c)
    }

    /// The fixture with `env` added, once its agent's socket is there.
    pub fn fixture_with(&self, env: &[(&str, &str)]) -> Proc {
        let mut c = self.cmd(FIXTURE);
        for (k, v) in env {
            c.env(k, v);
        }
        self.start(c)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed on drop (also when a test fails), whose stderr
/// (when piped) is collected as it comes.
pub struct Proc {
    /// The process.
    pub child: Child,
    err: Arc<Mutex<String>>,
    /// The thread collecting stderr (ends at the pipe's end of file).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    /// Take over `child`, collecting its stderr if it is piped.
    pub fn new(mut child: Child) -> Proc {
        let err = Arc::new(Mutex::new(String::new()));
        let reader = child.stderr.take().map(|e| {
            let err = Arc::clone(&err);
            std::thread::spawn(move || {
                for line in BufReader::new(e).lines() {
                    let Ok(l) = line else { break };
                    let mut s = err.lock().unwrap();
                    s.push_str(&l);
                    s.push('\n');
                }
            })
        });
        Proc { child, err, reader }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its pid, as an argument.
    pub fn p(&self) -> String {
        self.pid().to_string()
    }

    /// Still running (not exited, e.g. because its own `open` failed)?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// All its stderr, once it has exited: waits for the collecting thread
    /// to read the pipe to its end.
    pub fn stderr_after_exit(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.stderr()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until `f()` holds; fails the test after [`PATIENCE`].
#[track_caller]
pub fn poll(mut f: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's stdout.
pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

/// A command's stderr.
pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// The stdout of a command that succeeded (else the test fails, showing
/// both outputs).
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// [`ok`]'s stdout as JSON.
#[track_caller]
pub fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", stdout(o)))
}
