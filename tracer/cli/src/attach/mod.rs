//! `tracer attach -p PID` and `tracer detach -p PID`: load the agent (the
//! preload library) into a process started without the tracer, and stop
//! it again.
//!
//! # Attach, step by step
//!
//! 1. **Checks before touching anything** (each refusal says what to do):
//!    the process exists; it has no agent yet (then attach is a no-op that
//!    says so); its executable is a 64-bit ELF of this architecture; it has
//!    a dynamic loader (not static); some object it has mapped has pad
//!    tables (`__patchable_function_entries`, `__mcount_loc`); nobody
//!    ptraces it already (`TracerPid`); `dlopen` is found in its C library.
//! 2. **Stop every thread**: `PTRACE_SEIZE` then `PTRACE_INTERRUPT` each
//!    thread of `/proc/PID/task`, again until no new thread appears, and
//!    wait for each stop. A thread the stop made fail a system call with
//!    `EINTR` that the kernel does not restart (`epoll_wait`, `semop`,
//!    `sigtimedwait`, sockets with timeouts: see signal(7)) and that has no
//!    signal pending gets its call restarted instead ([`arch::EINTR_ON_STOP`]).
//!    Calls the kernel restarts itself (`-ERESTARTSYS`,
//!    `-ERESTART_RESTARTBLOCK`: `read`, `nanosleep`, `futex`, `poll`,
//!    `accept`) are left to it: their registers are put back exactly as
//!    read, and the kernel restarts them when the thread resumes.
//! 3. **GCC's NOP pads** (five 1-byte NOPs) become one 5-byte NOP while
//!    every thread is stopped, except those a thread's instruction pointer
//!    is inside (reported).
//! 4. **Choose the thread that runs the loader**: one stopped outside any
//!    system call in code outside the C library and the loader, else one
//!    blocked in a system call made by a thin wrapper that holds no lock
//!    ([`arch::SAFE_BLOCKING`]). If no thread qualifies, every thread is
//!    resumed for 20 ms and the whole stop is tried again (25 times).
//! 5. **Every other thread is resumed** (detached) before the loader runs,
//!    so a lock the loader or `malloc` needs that another thread holds is
//!    released as that thread goes on: the injection cannot deadlock on
//!    another thread. The chosen thread itself holds none of them (step 4).
//! 6. **The call**: the chosen thread's registers and vector state are
//!    saved; the library's path is written below its stack pointer past
//!    the red zone; `dlopen(path, RTLD_NOW)` is called with the stack
//!    16-byte aligned and a return address of 0, so the return faults and
//!    the tracer catches it; signals arriving meanwhile are held and
//!    delivered after. The library's constructor starts the agent exactly as
//!    under `LD_PRELOAD`. On failure `dlerror()` is called for the reason.
//! 7. **Restore**: registers and vector state as saved, then detach; the
//!    interrupted system call restarts as the kernel meant it to.
//!
//! A library mapped already (attached before, then detached) is not loaded
//! again: its `tracer_preload_attach()` starts a new agent.
//!
//! # Detach
//!
//! The agent is asked to `quit`: it disables every function, gives the rings
//! back, stops its threads (agent, collector) and removes its socket. The
//! library stays loaded, idle: unloading it is not safe while any thread may
//! still be returning through one of its trampolines.

use crate::client::{self, Client};
use crate::{exit, Error};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
#[path = "x86_64.rs"]
pub mod arch;
pub mod procfs;
#[cfg(target_arch = "x86_64")]
pub mod ptrace;

/// The library's entry point that starts its agent again after a detach.
pub const START_SYMBOL: &str = "tracer_preload_attach";
/// The preload library's file name.
pub const LIBRARY: &str = "libtracer_preload.so";
/// `RTLD_NOW`.
const RTLD_NOW: usize = 2;

/// What an attach did, with its timings.
#[derive(Debug, Clone, Default)]
pub struct Attached {
    /// The process already had an agent: nothing was done.
    pub already: bool,
    /// The library was mapped already (a detached agent was started again).
    pub restarted: bool,
    /// The thread that ran the loader.
    pub thread: i32,
    /// Threads stopped.
    pub threads: usize,
    /// GCC NOP pads converted to one 5-byte NOP.
    pub converted: usize,
    /// GCC NOP pads left as they are (a thread was inside them).
    pub left: Vec<usize>,
    /// System calls restarted instead of failing with `EINTR`.
    pub restarted_calls: usize,
    /// How long every thread was stopped (from the first stop to the last
    /// thread but the loader's resumed).
    pub pause_all: Duration,
    /// How long the loader's thread was stopped (its whole detour).
    pub pause_loader: Duration,
    /// From the start of the attach to the agent answering.
    pub total: Duration,
    /// Tries needed to find a thread at a safe point.
    pub tries: usize,
}

fn perm_error(pid: i32, what: &str, e: &std::io::Error) -> Error {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .ok();
    let why = match scope.as_deref() {
        Some("1") => " /proc/sys/kernel/yama/ptrace_scope is 1: only a parent may ptrace its \
             children; run tracer as root or with CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep), or \
             set it to 0 (sysctl kernel.yama.ptrace_scope=0)"
            .to_string(),
        Some("2") => " /proc/sys/kernel/yama/ptrace_scope is 2: only processes with \
             CAP_SYS_PTRACE may ptrace; run tracer as root or with CAP_SYS_PTRACE"
            .to_string(),
        Some("3") => {
            " /proc/sys/kernel/yama/ptrace_scope is 3: ptrace is disabled until reboot".to_string()
        }
        _ => " run tracer as the process's user or as root (CAP_SYS_PTRACE); in a container, \
             it needs CAP_SYS_PTRACE and a seccomp profile that allows ptrace"
            .to_string(),
    };
    Error::failed(format!(
        "cannot {what} process {pid}: {e}: no permission to ptrace it;{why}"
    ))
}

fn gone(pid: i32) -> Error {
    Error::no_target(format!(
        "process {pid} exited during the attach; nothing was left behind"
    ))
}

/// The preload library: `$TRACER_PRELOAD`, or `libtracer_preload.so` next
/// to this `tracer` executable or in `../lib/tracer/`.
pub fn find_library() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(tracer_core::wire::env::PRELOAD) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::failed(format!("cannot find this program's path: {e}")))?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for cand in [dir.join(LIBRARY), dir.join("../lib/tracer").join(LIBRARY)] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(Error::failed(format!(
        "{LIBRARY} was not found next to {} or in ../lib/tracer/; build it (cargo build --release \
         -p tracer-preload) or point TRACER_PRELOAD at it",
        exe.display()
    )))
}

/// An ELF object as the process loaded it.
#[derive(Debug, Clone)]
struct LoadedObject {
    /// The file it was loaded from.
    path: String,
    /// Load bias: runtime address minus link-time address.
    bias: usize,
    /// Executable segments, runtime `[start, end)`.
    exec: Vec<(usize, usize)>,
}

/// One ELF object mapped in the process, with its file's bytes (read
/// once: they are parsed for pads, symbols and segments).
#[derive(Debug, Clone)]
struct Object {
    loaded: LoadedObject,
    data: std::rc::Rc<Vec<u8>>,
}

/// The sections compilers list their pads in (as the runtime's
/// `discover.rs`; the `tracer` program does not link the runtime, whose
/// constructor would start an agent in it).
const PAD_TABLES: [&str; 2] = ["__patchable_function_entries", "__mcount_loc"];

/// Does the object have pad tables?
fn has_pads(obj: &Object) -> bool {
    use object::{Object as _, ObjectSection};
    let Ok(file) = object::File::parse(&**obj.data) else {
        return false;
    };
    let found = file
        .sections()
        .any(|s| s.name().is_ok_and(|n| PAD_TABLES.contains(&n)));
    found
}

/// The pads an object's tables list, read from the process's memory (in a
/// PIE or shared library the loader relocated them), inside its code.
fn pad_sites(o: &Object, read: &dyn Fn(usize, &mut [u8])) -> Vec<usize> {
    use object::{Object as _, ObjectSection};
    let Ok(file) = object::File::parse(&**o.data) else {
        return Vec::new();
    };
    let obj = &o.loaded;
    let in_code = |a: usize| obj.exec.iter().any(|&(s, e)| a >= s && a < e);
    let mut out = Vec::new();
    for sec in file.sections() {
        if !sec.name().is_ok_and(|n| PAD_TABLES.contains(&n)) {
            continue;
        }
        let (addr, size) = (sec.address() as usize, sec.size() as usize);
        if addr == 0 || size == 0 {
            continue;
        }
        let mut table = vec![0u8; size];
        read(obj.bias.wrapping_add(addr), &mut table);
        for w in table.chunks_exact(8) {
            let a = u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) as usize;
            if a != 0 && in_code(a) {
                out.push(a);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The file-backed objects of `maps`, with their load bias and executable
/// segments computed from their program headers as the loader placed them.
fn objects(maps: &[procfs::Mapping]) -> Vec<Object> {
    use object::{Object as _, ObjectSegment};
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for m in maps {
        if !m.path.starts_with('/') || m.path.ends_with(" (deleted)") || seen.contains(&&*m.path) {
            continue;
        }
        seen.push(&m.path);
        let Some(first) = maps.iter().find(|x| x.path == m.path && x.offset == 0) else {
            continue;
        };
        let Ok(data) = std::fs::read(&m.path) else {
            continue;
        };
        let Ok(file) = object::File::parse(&*data) else {
            continue;
        };
        // The first PT_LOAD is mapped at offset 0: bias = where it is minus
        // its page-aligned link-time address.
        let Some(lowest) = file.segments().map(|s| s.address()).min() else {
            continue;
        };
        let bias = first.start.wrapping_sub((lowest & !0xfff) as usize);
        let exec = exec_segments(&data, bias);
        out.push(Object {
            loaded: LoadedObject {
                path: m.path.clone(),
                bias,
                exec,
            },
            data: std::rc::Rc::new(data),
        });
    }
    out
}

/// Executable `PT_LOAD` segments of an ELF file, at `bias`.
fn exec_segments(data: &[u8], bias: usize) -> Vec<(usize, usize)> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let Ok(hdr) = object::elf::FileHeader64::<object::Endianness>::parse(data) else {
        return Vec::new();
    };
    let Ok(endian) = hdr.endian() else {
        return Vec::new();
    };
    let Ok(phdrs) = hdr.program_headers(endian, data) else {
        return Vec::new();
    };
    phdrs
        .iter()
        .filter(|p| {
            p.p_type(endian) == object::elf::PT_LOAD && p.p_flags(endian) & object::elf::PF_X != 0
        })
        .map(|p| {
            let s = bias.wrapping_add(p.p_vaddr(endian) as usize);
            (s, s + p.p_memsz(endian) as usize)
        })
        .collect()
}

/// The runtime address of the dynamic symbol `name` in `obj`.
fn symbol(obj: &Object, name: &str) -> Option<usize> {
    use object::{Object as _, ObjectSymbol};
    let file = object::File::parse(&**obj.data).ok()?;
    file.dynamic_symbols()
        .chain(file.symbols())
        .find(|s| s.name() == Ok(name) && !s.is_undefined() && s.address() != 0)
        .map(|s| obj.loaded.bias.wrapping_add(s.address() as usize))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn is_loader(path: &str) -> bool {
    let n = file_name(path);
    n.starts_with("ld-linux")
        || n.starts_with("ld64.so")
        || (n.starts_with("ld-") && n.contains(".so"))
}

fn is_libc(path: &str) -> bool {
    let n = file_name(path);
    n.starts_with("libc.so") || n.starts_with("libc-2.")
}

/// Objects whose code may hold the loader's or `malloc`'s locks.
fn holds_runtime_locks(path: &str) -> bool {
    let n = file_name(path);
    is_loader(path)
        || is_libc(path)
        || n.starts_with("libpthread")
        || n.starts_with("libdl")
        || n == LIBRARY
}

/// The checks of step 1 that need no ptrace: the ELF class and machine of
/// the executable.
fn check_executable(pid: i32) -> Result<(), Error> {
    let path = format!("/proc/{pid}/exe");
    let mut head = [0u8; 20];
    use std::io::Read;
    let r = std::fs::File::open(&path).and_then(|mut f| f.read_exact(&mut head));
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return Err(perm_error(pid, "read the executable of", &e));
        }
        if !client::alive(pid) {
            return Err(gone(pid));
        }
        return Err(Error::failed(format!(
            "cannot read the executable of process {pid} ({path}): {e}"
        )));
    }
    if &head[..4] != b"\x7fELF" {
        return Err(Error::failed(format!(
            "process {pid}'s executable is not an ELF file; tracer attach cannot load a library into it"
        )));
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if head[4] != 2 || machine != arch::ELF_MACHINE {
        let what = if head[4] == 1 {
            "a 32-bit program".to_string()
        } else {
            format!("a program for another architecture (ELF machine {machine})")
        };
        return Err(Error::failed(format!(
            "process {pid} is {what}; this tracer attaches to 64-bit {} processes only. Use a \
             tracer built for that architecture",
            arch::NAME
        )));
    }
    Ok(())
}

/// One stopped thread.
#[derive(Debug, Clone)]
struct Thread {
    tid: i32,
    /// The registers to put back (with an `EINTR` restart applied).
    regs: arch::Regs,
    /// A signal to deliver when it is let go (0: none).
    signal: i32,
    /// Stopped by a group-stop (`SIGSTOP`…): left stopped.
    group_stop: bool,
    /// Its `EINTR` was turned into a restart.
    restarted: bool,
}

/// Every thread of a process, stopped.
struct Stopped {
    threads: Vec<Thread>,
    since: Instant,
}

impl Stopped {
    /// Seize and interrupt every thread, until no new one appears; wait for
    /// each to stop.
    fn all(pid: i32, mem: &procfs::Mem) -> Result<Stopped, Error> {
        let since = Instant::now();
        let mut seized: Vec<i32> = Vec::new();
        let mut st = Stopped {
            threads: Vec::new(),
            since,
        };
        loop {
            let tasks = procfs::tasks(pid).map_err(|_| gone(pid))?;
            let new: Vec<i32> = tasks.into_iter().filter(|t| !seized.contains(t)).collect();
            if new.is_empty() {
                break;
            }
            // Seize and interrupt them all first, then wait: the stops
            // overlap (a busy thread may need a scheduler tick to stop).
            let mut waiting = Vec::new();
            for tid in new {
                seized.push(tid);
                if let Err(e) = ptrace::seize(tid) {
                    match e.raw_os_error() {
                        Some(libc::ESRCH) => continue,
                        Some(libc::EPERM) => {
                            for &t in &waiting {
                                if let Ok(Some(t)) = Self::wait_stop(t) {
                                    st.threads.push(t);
                                }
                            }
                            st.release();
                            let traced =
                                procfs::status_field(pid, "TracerPid").filter(|t| t != "0");
                            if let Some(t) = traced {
                                return Err(already_traced(pid, &t));
                            }
                            return Err(perm_error(pid, "ptrace", &e));
                        }
                        _ => {
                            for &t in &waiting {
                                if let Ok(Some(t)) = Self::wait_stop(t) {
                                    st.threads.push(t);
                                }
                            }
                            st.release();
                            return Err(Error::failed(format!(
                                "cannot ptrace thread {tid} of process {pid}: {e}"
                            )));
                        }
                    }
                }
                if ptrace::interrupt(tid).is_ok() {
                    waiting.push(tid);
                }
            }
            let mut failed = None;
            for tid in waiting {
                match Self::wait_stop(tid) {
                    Ok(Some(t)) => st.threads.push(t),
                    Ok(None) => {}
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                st.release();
                return Err(e);
            }
        }
        if !st.threads.iter().any(|t| t.tid == pid) {
            st.release();
            return Err(gone(pid));
        }
        for t in &mut st.threads {
            if t.group_stop || t.signal != 0 {
                continue;
            }
            let Some(nr) = arch::syscall_nr(&t.regs) else {
                continue;
            };
            if arch::syscall_ret(&t.regs) != -(libc::EINTR as i64)
                || !arch::EINTR_ON_STOP.contains(&nr)
                || procfs::pending_signals(pid, t.tid) != 0
            {
                continue;
            }
            let mut insn = [0u8; 2];
            let at = arch::pc(&t.regs) - insn.len();
            if mem.read(at, &mut insn).is_ok() && insn == arch::SYSCALL_INSN {
                arch::restart_syscall(&mut t.regs);
                t.restarted = true;
            }
        }
        Ok(st)
    }

    /// Wait for a seized, interrupted thread to stop: `None` if it ended.
    fn wait_stop(tid: i32) -> Result<Option<Thread>, Error> {
        let stop = ptrace::wait(tid, false)
            .map_err(|e| Error::failed(format!("cannot wait for thread {tid}: {e}")))?;
        let (signal, group_stop) = match stop {
            Some(ptrace::Stop::Gone) | None => return Ok(None),
            Some(ptrace::Stop::Event(g)) => (0, g.is_some()),
            Some(ptrace::Stop::Signal(s)) => (s, false),
        };
        let regs = match ptrace::regs(tid) {
            Ok(r) => r,
            Err(_) => return Ok(None),
        };
        Ok(Some(Thread {
            tid,
            regs,
            signal,
            group_stop,
            restarted: false,
        }))
    }

    /// Let one thread go: its registers back (an `EINTR` restart applied),
    /// its held signal delivered.
    fn let_go(t: &Thread) {
        if t.restarted {
            let _ = ptrace::set_regs(t.tid, &t.regs);
        }
        let _ = ptrace::detach(t.tid, t.signal);
    }

    /// Let every thread go.
    fn release(&mut self) {
        for t in self.threads.drain(..) {
            Self::let_go(&t);
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.release();
    }
}

fn already_traced(pid: i32, tracer_pid: &str) -> Error {
    let who = tracer_pid
        .parse::<i32>()
        .map(|p| format!("process {p} ({})", client::comm(p)))
        .unwrap_or_else(|_| tracer_pid.to_string());
    Error::failed(format!(
        "process {pid} is being traced already by {who} (a debugger or strace?); a process has \
         one tracer at a time: detach that one first (gdb: `detach`), then attach again"
    ))
}

/// GCC's pads (five 1-byte NOPs) in the process's objects: found before
/// the threads are stopped (parsing the files takes a while), converted
/// while they are ([`convert_gcc_pads`]).
fn gcc_pads(objs: &[Object], mem: &procfs::Mem) -> Vec<usize> {
    let read = |a: usize, buf: &mut [u8]| {
        if mem.read(a, buf).is_err() {
            buf.fill(0);
        }
    };
    let mut out = Vec::new();
    for o in objs {
        if file_name(&o.loaded.path) == LIBRARY || !has_pads(o) {
            continue;
        }
        for site in pad_sites(o, &read) {
            let mut b = [0u8; 5];
            read(site, &mut b);
            if b == arch::GCC_PAD {
                out.push(site);
            }
        }
    }
    out
}

/// Turn GCC's five 1-byte NOPs at `sites` into one 5-byte NOP where no
/// thread is inside them (every thread stopped). Returns (converted, left).
fn convert_gcc_pads(sites: &[usize], mem: &procfs::Mem, ips: &[usize]) -> (usize, Vec<usize>) {
    let (mut converted, mut left) = (0, Vec::new());
    for &site in sites {
        let mut b = [0u8; 5];
        if mem.read(site, &mut b).is_err() || b != arch::GCC_PAD {
            continue;
        }
        if ips.iter().any(|&ip| ip > site && ip < site + b.len()) {
            left.push(site);
            continue;
        }
        if mem.write(site, &arch::NOP5).is_ok() {
            converted += 1;
        }
    }
    (converted, left)
}

/// A thread at a safe point to run the loader: stopped outside a system
/// call in code of no object that may hold the loader's or `malloc`'s
/// locks, else blocked in a thin wrapper's system call.
fn choose(threads: &[Thread], maps: &[procfs::Mapping]) -> Option<usize> {
    let owner = |ip: usize| {
        maps.iter()
            .find(|m| m.exec && ip >= m.start && ip < m.end)
            .map(|m| m.path.as_str())
    };
    let usable = |t: &Thread| !t.group_stop && t.signal == 0;
    let in_user_code = threads.iter().position(|t| {
        usable(t)
            && arch::syscall_nr(&t.regs).is_none()
            && owner(arch::pc(&t.regs))
                .is_some_and(|p| p.starts_with('/') && !holds_runtime_locks(p))
    });
    in_user_code.or_else(|| {
        threads.iter().position(|t| {
            usable(t)
                && !t.restarted
                && arch::syscall_nr(&t.regs).is_some_and(|n| arch::SAFE_BLOCKING.contains(&n))
        })
    })
}

/// A thread taken over to call functions in the process.
struct Hijacked<'a> {
    pid: i32,
    t: Thread,
    mem: &'a procfs::Mem,
    vector: (libc::c_int, Vec<u8>),
    /// Signals that arrived during the calls, delivered after.
    held: Vec<i32>,
    since: Instant,
}

impl Hijacked<'_> {
    /// Call `func(args…)` with `data` copied below the stack (its address
    /// is passed where an argument is [`DATA`]); returns what it returned.
    fn call(&mut self, func: usize, args: &[usize], data: &[u8]) -> Result<usize, Error> {
        let tid = self.t.tid;
        let top = arch::sp(&self.t.regs) - arch::RED_ZONE - 256;
        let data_at = (top - data.len()) & !15;
        let args: Vec<usize> = args
            .iter()
            .map(|&a| if a == DATA { data_at } else { a })
            .collect();
        let (regs, writes) = arch::call(&self.t.regs, func, &args, data_at);
        let fail = |what: &str, e: std::io::Error| {
            Error::failed(format!("cannot {what} thread {tid}: {e}"))
        };
        if !data.is_empty() {
            self.mem
                .write(data_at, data)
                .map_err(|e| fail("write the stack of", e))?;
        }
        for (a, b) in writes {
            self.mem
                .write(a, &b)
                .map_err(|e| fail("write the stack of", e))?;
        }
        ptrace::set_regs(tid, &regs).map_err(|e| fail("set the registers of", e))?;
        ptrace::cont(tid, 0).map_err(|e| fail("resume", e))?;
        let mut told = false;
        let t0 = Instant::now();
        loop {
            let stop = ptrace::wait(tid, true).map_err(|e| fail("wait for", e))?;
            let Some(stop) = stop else {
                if !told && t0.elapsed() > Duration::from_secs(5) {
                    eprintln!(
                        "tracer: thread {tid} has been running the loader for 5 s; still waiting \
                         (it is not safe to stop it halfway)"
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_micros(200));
                continue;
            };
            match stop {
                ptrace::Stop::Gone => return Err(gone(self.pid)),
                ptrace::Stop::Signal(libc::SIGSEGV) => {
                    let r = ptrace::regs(tid).map_err(|e| fail("read the registers of", e))?;
                    if arch::returned(&r) {
                        return Ok(arch::call_result(&r));
                    }
                    return Err(Error::failed(format!(
                        "the injected call crashed in thread {tid} (SIGSEGV at {:#x}); the thread \
                         was put back as it was",
                        arch::pc(&r)
                    )));
                }
                ptrace::Stop::Signal(s) => {
                    self.held.push(s);
                    ptrace::cont(tid, 0).map_err(|e| fail("resume", e))?;
                }
                ptrace::Stop::Event(_) => {
                    ptrace::cont(tid, 0).map_err(|e| fail("resume", e))?;
                }
            }
        }
    }

    /// Put the thread back exactly as it was and let it go.
    fn restore(self) -> Duration {
        let tid = self.t.tid;
        let _ = ptrace::set_regs(tid, &self.t.regs);
        let _ = ptrace::set_vector_state(tid, &self.vector);
        let mut held = self.held;
        if self.t.signal != 0 {
            held.insert(0, self.t.signal);
        }
        let first = held.first().copied().unwrap_or(0);
        let _ = ptrace::detach(tid, first);
        for &s in held.iter().skip(1) {
            // SAFETY: tgkill with plain integers.
            unsafe { libc::syscall(libc::SYS_tgkill, self.pid, tid, s) };
        }
        self.since.elapsed()
    }
}

/// An argument replaced by the address of the call's data.
const DATA: usize = usize::MAX;

/// Attach to process `pid`: load `lib` (the preload library) with the
/// dynamic loader, or start its agent again if it is loaded already.
pub fn attach(pid: i32, lib: &Path) -> Result<Attached, Error> {
    let t0 = Instant::now();
    if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error::no_target(format!(
            "no process {pid}; check the pid (ps -e, pgrep NAME)"
        )));
    }
    if pid as u32 == std::process::id() {
        return Err(Error::failed("tracer cannot attach to itself"));
    }
    if client::socket_of(pid).is_some() && Client::connect(pid).is_ok() {
        return Ok(Attached {
            already: true,
            total: t0.elapsed(),
            ..Default::default()
        });
    }
    check_executable(pid)?;
    if let Some(t) = procfs::status_field(pid, "TracerPid").filter(|t| t != "0") {
        return Err(already_traced(pid, &t));
    }
    let lib = lib
        .canonicalize()
        .map_err(|e| Error::failed(format!("cannot find {}: {e}", lib.display())))?;
    let maps = procfs::maps(pid).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            perm_error(pid, "read the mappings of", &e)
        } else {
            gone(pid)
        }
    })?;
    let objs = objects(&maps);
    let Some(libc_obj) = objs.iter().find(|o| is_libc(&o.loaded.path)) else {
        return Err(Error::failed(format!(
            "process {pid} has no dynamic loader or C library mapped (a static executable?): a \
             library cannot be loaded into it. Link it dynamically (no -static), build it with \
             pads and attach again, or start it with `tracer run`"
        )));
    };
    if !objs.iter().any(|o| is_loader(&o.loaded.path)) {
        return Err(Error::failed(format!(
            "process {pid} has no dynamic loader mapped (statically linked?): a library cannot be \
             loaded into it. Link it dynamically and attach again"
        )));
    }
    let padded = objs
        .iter()
        .any(|o| file_name(&o.loaded.path) != LIBRARY && has_pads(o));
    if !padded {
        return Err(Error::failed(format!(
            "process {pid} ({}) has no compiler pads in its executable or libraries: nothing \
             could be traced. Rebuild with -fpatchable-function-entry=5 (clang, GCC), GCC's -pg \
             -mfentry -mnop-mcount -mrecord-mcount -fno-pie -no-pie, or rustc's -Z \
             patchable-function-entry=5 (nightly), then start it again",
            client::comm(pid)
        )));
    }
    let loaded = objs
        .iter()
        .find(|o| Path::new(&o.loaded.path) == lib || file_name(&o.loaded.path) == LIBRARY);
    let (func, args, data): (usize, Vec<usize>, Vec<u8>) = match loaded {
        Some(o) => {
            let f = symbol(o, START_SYMBOL).ok_or_else(|| {
                Error::failed(format!(
                    "process {pid} has {} loaded already but it has no {START_SYMBOL} (an older \
                     tracer's library?); restart the process to attach",
                    o.loaded.path
                ))
            })?;
            (f, Vec::new(), Vec::new())
        }
        None => {
            let f = symbol(libc_obj, "dlopen")
                .or_else(|| {
                    objs.iter()
                        .filter(|o| file_name(&o.loaded.path).starts_with("libdl"))
                        .find_map(|o| symbol(o, "dlopen"))
                })
                .ok_or_else(|| {
                    Error::failed(format!(
                        "no dlopen in the C library of process {pid} ({}; glibc 2.34 or later \
                         has it) nor in a libdl it has loaded; start it with `tracer run` instead",
                        libc_obj.loaded.path
                    ))
                })?;
            let mut path = lib.as_os_str().as_encoded_bytes().to_vec();
            path.push(0);
            (f, vec![DATA, RTLD_NOW], path)
        }
    };
    let dlerror = symbol(libc_obj, "dlerror");
    let mem = procfs::Mem::open(pid).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            perm_error(pid, "open the memory of", &e)
        } else {
            gone(pid)
        }
    })?;

    let mut gcc = gcc_pads(&objs, &mem);
    let mut out = Attached {
        restarted: loaded.is_some(),
        ..Default::default()
    };
    let (mut stopped, chosen) = loop {
        out.tries += 1;
        let mut stopped = Stopped::all(pid, &mem)?;
        let ips: Vec<usize> = stopped.threads.iter().map(|t| arch::pc(&t.regs)).collect();
        let (n, left) = convert_gcc_pads(&gcc, &mem, &ips);
        out.converted += n;
        out.left = left;
        gcc.retain(|s| out.left.contains(s));
        // A pad a thread was inside: let the threads go on a little and
        // stop them again (a few times at most).
        let retry_pads = !out.left.is_empty() && out.tries < 5;
        if let Some(i) = choose(&stopped.threads, &maps).filter(|_| !retry_pads) {
            break (stopped, i);
        }
        if stopped.threads.iter().all(|t| t.group_stop) {
            stopped.release();
            return Err(Error::failed(format!(
                "process {pid} is stopped (SIGSTOP, Ctrl-Z, a debugger's stop): no thread can run \
                 the loader. Continue it (kill -CONT {pid}) and attach again"
            )));
        }
        stopped.release();
        if out.tries >= 25 {
            return Err(Error::failed(format!(
                "no thread of process {pid} stopped at a safe point to run the loader in 25 tries \
                 (each was inside the C library or the loader, or blocked in a call that may \
                 hold a lock); try again when it is less busy"
            )));
        }
        std::thread::sleep(Duration::from_millis(if retry_pads { 1 } else { 20 }));
    };
    out.threads = stopped.threads.len();
    out.restarted_calls = stopped.threads.iter().filter(|t| t.restarted).count();
    let t = stopped.threads.remove(chosen);
    out.thread = t.tid;
    let since = stopped.since;
    let vector = match ptrace::vector_state(t.tid) {
        Ok(v) => v,
        Err(e) => {
            Stopped::let_go(&t);
            return Err(Error::failed(format!(
                "cannot read the vector registers of thread {}: {e}",
                t.tid
            )));
        }
    };
    // Step 5: everyone else goes on while the loader runs.
    stopped.release();
    out.pause_all = since.elapsed();
    let mut h = Hijacked {
        pid,
        t,
        mem: &mem,
        vector,
        held: Vec::new(),
        since,
    };
    let r = h.call(func, &args, &data);
    let r = match r {
        Ok(0) if loaded.is_none() => {
            let why = dlerror
                .and_then(|f| h.call(f, &[], &[]).ok())
                .filter(|&p| p != 0)
                .map(|p| mem.read_cstr(p, 4096))
                .unwrap_or_else(|| "no reason given".into());
            Err(Error::failed(format!(
                "the dynamic loader of process {pid} could not load {}: {why}",
                lib.display()
            )))
        }
        Ok(v) if loaded.is_some() && v != 0 => Err(Error::failed(format!(
            "the agent of process {pid} could not be started again (see the process's standard \
             error)"
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    let gone_now = matches!(&r, Err(e) if e.code == exit::NO_TARGET);
    if !gone_now {
        out.pause_loader = h.restore();
    }
    r?;
    // The constructor created the socket before dlopen returned.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if Client::connect(pid).is_ok() {
            break;
        }
        if !client::alive(pid) {
            return Err(gone(pid));
        }
        if Instant::now() > deadline {
            return Err(Error::failed(format!(
                "{} was loaded into process {pid} but its agent did not answer within 3 s (is \
                 TRACER_AGENT=0 set in its environment? see its standard error)",
                lib.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    out.total = t0.elapsed();
    Ok(out)
}

/// What a detach did.
#[derive(Debug, Clone, Default)]
pub struct Detached {
    /// Functions that were enabled and are not any more.
    pub disabled: u64,
}

/// The agent's threads still alive in `pid` (by name).
pub fn agent_threads(pid: i32) -> Vec<i32> {
    procfs::tasks(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm"))
                .is_ok_and(|c| matches!(c.trim(), "tracer-agent" | "tracer-collector"))
        })
        .collect()
}

/// Stop the agent of `pid`: every function disabled, its threads ended,
/// its socket removed; the library stays loaded, idle.
pub fn detach(pid: i32) -> Result<Detached, Error> {
    if pid <= 0 || !client::alive(pid) {
        return Err(Error::no_target(format!(
            "no process {pid}; check the pid (ps -e, pgrep NAME)"
        )));
    }
    let mut c = Client::connect(pid)?;
    let v = c.call("quit", serde_json::json!({}))?;
    let disabled = v["disabled"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while client::socket_of(pid).is_some() || !agent_threads(pid).is_empty() {
        if !client::alive(pid) {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::failed(format!(
                "the agent of process {pid} was asked to stop but its threads or socket are still \
                 there after 3 s (threads {:?})",
                agent_threads(pid)
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(Detached { disabled })
}

/// `tracer attach -p PID`: attach and say what was done.
pub fn attach_verb(pid: i32, lib: Option<PathBuf>, json: bool) -> Result<i32, Error> {
    let lib = match lib {
        Some(l) => l,
        None => find_library()?,
    };
    let a = attach(pid, &lib)?;
    if json {
        let v = serde_json::json!({
            "pid": pid,
            "already": a.already,
            "restarted": a.restarted,
            "thread": a.thread,
            "threads": a.threads,
            "converted": a.converted,
            "left": a.left.iter().map(|s| format!("{s:#x}")).collect::<Vec<_>>(),
            "restarted_calls": a.restarted_calls,
            "pause_all_us": a.pause_all.as_micros() as u64,
            "pause_loader_us": a.pause_loader.as_micros() as u64,
            "total_us": a.total.as_micros() as u64,
            "tries": a.tries,
        });
        println!("{v}");
        return Ok(exit::OK);
    }
    if a.already {
        println!(
            "process {pid} ({}) already has an agent; nothing to do",
            client::comm(pid)
        );
        return Ok(exit::OK);
    }
    println!(
        "attached to process {pid} ({}): {} {} by thread {} ({} threads stopped {:.1} ms, the \
         loader's thread {:.1} ms, {:.1} ms in all)",
        client::comm(pid),
        if a.restarted {
            "agent started again"
        } else {
            "agent loaded"
        },
        if a.restarted {
            "(library already loaded)"
        } else {
            "with dlopen"
        },
        a.thread,
        a.threads,
        a.pause_all.as_secs_f64() * 1e3,
        a.pause_loader.as_secs_f64() * 1e3,
        a.total.as_secs_f64() * 1e3,
    );
    if a.converted > 0 || !a.left.is_empty() {
        println!(
            "GCC NOP pads: {} converted to one 5-byte NOP{}",
            a.converted,
            if a.left.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} left as they are (a thread was inside them; their functions are listed \
                     with the reason): {}",
                    a.left.len(),
                    a.left
                        .iter()
                        .map(|s| format!("{s:#x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        );
    }
    if a.restarted_calls > 0 {
        println!(
            "{} interrupted system calls restarted (they would have failed with EINTR)",
            a.restarted_calls
        );
    }
    Ok(exit::OK)
}

/// `tracer detach -p PID`: detach and say what was done.
pub fn detach_verb(pid: i32) -> Result<i32, Error> {
    let d = detach(pid)?;
    println!(
        "detached from process {pid} ({}): {} functions disabled, agent stopped, socket removed; \
         {LIBRARY} stays loaded, idle",
        client::comm(pid),
        d.disabled
    );
    Ok(exit::OK)
}
