//! The geth process, in either mode, as one stream of [`ProcEvent`]s:
//! `Started(pid)`, its log lines in order, then `Exited`.
//!
//! - **spawn**: geth is our child; its stdout/stderr go to a file
//!   (`<datadir>/geth-agent/geth.log`, [`spawn_log_path`]) that the agent follows,
//!   and `Exited` carries the real exit status, sent only after the file drained.
//!   A file, not a pipe: geth must outlive a killed agent (Go dies of SIGPIPE
//!   when it writes to a broken stderr pipe) so that the next agent adopts it.
//! - **attach** (and a spawn-mode agent adopting the geth of its killed
//!   predecessor): geth is found in `/proc` by its executable and `--datadir`
//!   (or a pid file); its log file is followed across restarts, truncation and
//!   rotation; exit is seen when the process disappears (status unknown to a
//!   non-parent).

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::geth::GethCommand;
use crate::logline::{LogLine, MAX_LINE_BYTES};
use crate::shutdown::Exit;

#[derive(Debug, Clone, PartialEq)]
pub enum ProcEvent {
    Started(u32),
    /// This geth answers over IPC (and serves the configured chain): it runs,
    /// whether or not its start-up lines were seen.
    Answering(u32),
    Line(LogLine),
    /// A line that is not geth JSON (e.g. `Fatal: …`).
    Text(String),
    Exited(Exit),
}

pub type Events = mpsc::Sender<ProcEvent>;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
}

pub fn signal(pid: u32, sig: Signal) -> nix::Result<()> {
    kill(Pid::from_raw(pid as i32), sig)
}

/// The agent's environment without `GETH_*` variables: geth treats those as its
/// own flags and warns about unknown ones (`GETH_BIN`, `GETH_AGENT_*`).
pub fn geth_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(key, _)| !key.to_string_lossy().starts_with("GETH_"))
        .collect()
}

/// Where a spawned geth's stdout and stderr go (and where a successor agent
/// follows an adopted geth).
pub fn spawn_log_path(datadir: &Path) -> PathBuf {
    datadir.join("geth-agent").join("geth.log")
}

/// Spawns geth; its events go to `events`. Returns the pid.
pub fn spawn(cmd: &GethCommand, events: Events) -> Result<u32, ProcessError> {
    let log_path = spawn_log_path(&cmd.datadir);
    let spawn_err = |source| ProcessError::Spawn {
        binary: cmd.binary.display().to_string(),
        source,
    };
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir).map_err(spawn_err)?;
    }
    // Each geth session starts a fresh file: the follower reads it from the
    // start. Append mode, so that geth keeps writing at the start once the
    // follower empties the file.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(spawn_err)?;
    out.set_len(0).map_err(spawn_err)?;
    let err = out.try_clone().map_err(spawn_err)?;
    let mut child = tokio::process::Command::new(&cmd.binary)
        .args(cmd.args())
        .env_clear()
        .envs(geth_env())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: a terminal's Ctrl-C reaches the agent only, so geth
        // receives exactly one signal, from us. Not killed with the agent: a
        // restarted agent adopts it.
        .process_group(0)
        .spawn()
        .map_err(spawn_err)?;
    let pid = child.id().unwrap_or_default();
    tokio::spawn(async move {
        let _ = events.send(ProcEvent::Started(pid)).await;
        let mut follower = LogFollower::from_start(log_path);
        let mut ticker = tokio::time::interval(FOLLOW_TICK);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = ticker.tick() => {
                    for event in follower.read_new() {
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    follower.empty_when_over(SPAWN_LOG_MAX);
                }
            }
        };
        // Everything geth wrote comes before its exit.
        loop {
            let rest = follower.read_new();
            if rest.is_empty() {
                break;
            }
            for event in rest {
                let _ = events.send(event).await;
            }
        }
        let exit = match status {
            Ok(status) => exit_of(status),
            Err(_) => Exit::Vanished,
        };
        let _ = events.send(ProcEvent::Exited(exit)).await;
    });
    Ok(pid)
}

pub fn exit_of(status: ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => Exit::Vanished,
    }
}

/// Where to find a geth that the agent did not start.
#[derive(Debug, Clone, Default)]
pub struct AttachTarget {
    pub datadir: PathBuf,
    pub log_file: PathBuf,
    pub pid_file: Option<PathBuf>,
    /// The configured geth binary: a process running it matches whatever its name.
    pub binary: Option<PathBuf>,
}

const ATTACH_TICK: Duration = Duration::from_millis(200);
const FOLLOW_TICK: Duration = Duration::from_millis(100);
/// A spawned geth's output file is emptied once read past this size: its
/// lines are in the agent's own log already.
const SPAWN_LOG_MAX: u64 = 64 * 1024 * 1024;

/// How long [`watch`] follows geth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Every geth on the datadir, one after another (attach mode).
    Forever,
    /// This one process, until it exits (spawn mode adopting a running geth).
    Adopt(u32),
}

/// Watches for geth processes on `target` and follows the log file, until
/// cancelled. One task, so an `Exited` always comes after the process's lines.
pub async fn attach(target: AttachTarget, events: Events, cancel: CancellationToken) {
    watch(target, Watch::Forever, events, cancel).await
}

/// Follows geth's processes and log as [`ProcEvent`]s; see [`Watch`].
pub async fn watch(target: AttachTarget, how: Watch, events: Events, cancel: CancellationToken) {
    let mut follower = LogFollower::new(target.log_file.clone());
    let mut current: Option<(u32, u64)> = None; // pid, start time
    let mut ticker = tokio::time::interval(ATTACH_TICK);
    let mut adopt = match how {
        Watch::Forever => None,
        Watch::Adopt(pid) => Some(pid),
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let found = match (current, how) {
            (None, Watch::Forever) => find_geth(&target),
            (None, Watch::Adopt(_)) => adopt.take(),
            (Some(_), _) => None,
        }
        .and_then(|pid| start_time(pid).map(|t| (pid, t)));
        // Lines first, then process changes: a new geth's start-up lines belong to it.
        if let Some((pid, t)) = found {
            current = Some((pid, t));
            if events.send(ProcEvent::Started(pid)).await.is_err() {
                return;
            }
        } else if current.is_none() && matches!(how, Watch::Adopt(_)) {
            // The adopted geth was gone before we looked.
            let _ = events.send(ProcEvent::Exited(Exit::Vanished)).await;
            return;
        }
        for event in follower.read_new() {
            if events.send(event).await.is_err() {
                return;
            }
        }
        if matches!(how, Watch::Adopt(_)) {
            follower.empty_when_over(SPAWN_LOG_MAX); // the agent's own file
        }
        if let Some((pid, t)) = current {
            if start_time(pid) != Some(t) {
                // Gone (or the pid was reused): drain what it wrote last.
                for event in follower.read_new() {
                    let _ = events.send(event).await;
                }
                current = None;
                if events
                    .send(ProcEvent::Exited(Exit::Vanished))
                    .await
                    .is_err()
                {
                    return;
                }
                if matches!(how, Watch::Adopt(_)) {
                    return;
                }
            }
        }
    }
}

/// The geth serving `target.datadir`: from the pid file, else by scanning `/proc`.
pub fn find_geth(target: &AttachTarget) -> Option<u32> {
    if let Some(file) = &target.pid_file {
        let pid = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        return start_time(pid).map(|_| pid);
    }
    let want = std::fs::canonicalize(&target.datadir).ok()?;
    let binary = target
        .binary
        .as_deref()
        .and_then(resolve_binary)
        .and_then(|b| std::fs::canonicalize(b).ok());
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        // Unreadable for another user's process: then argv[0] decides.
        let exe = std::fs::read_link(entry.path().join("exe")).ok();
        if is_geth(&cmdline, exe.as_deref(), binary.as_deref())
            && serves_datadir(&cmdline, &want)
            && start_time(pid).is_some()
        {
            // The oldest matching process is geth itself, not a `geth attach` or similar.
            found = Some(found.map_or(pid, |f: u32| f.min(pid)));
        }
    }
    found
}

/// The geth to run for the geth found at `pid` (attach mode): the configured
/// binary where this machine has it, else that process's own executable
/// (`/proc/<pid>/exe`): a container beside geth's, sharing its PID namespace,
/// need not carry geth.
pub fn binary_for(configured: &Path, pid: u32) -> PathBuf {
    match resolve_binary(configured) {
        Some(path) if path.is_file() => configured.to_owned(),
        _ => PathBuf::from(format!("/proc/{pid}/exe")),
    }
}

/// A bare program name is looked up on the PATH, as the agent would run it.
fn resolve_binary(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return Some(binary.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}

/// Whether a process is geth itself: its executable is the configured binary,
/// or is named exactly `geth` (not `geth-agent`, not a script named geth-…).
fn is_geth(cmdline: &[u8], exe: Option<&Path>, binary: Option<&Path>) -> bool {
    let named_geth = |p: &Path| p.file_name().is_some_and(|n| n == "geth");
    match exe {
        // The kernel's word: what the process really runs (" (deleted)" after an upgrade).
        Some(exe) => {
            let exe_text = exe.to_string_lossy();
            let exe = Path::new(exe_text.strip_suffix(" (deleted)").unwrap_or(&exe_text));
            named_geth(exe) || binary.is_some_and(|b| b == exe)
        }
        None => {
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            named_geth(Path::new(std::ffi::OsStr::from_bytes_lossy(argv0)))
        }
    }
}

/// Whether the running geth `pid` keeps every block's state (`--gcmode
/// archive` on its command line); `None` when its command line is unreadable.
pub fn runs_archive(pid: u32) -> Option<bool> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(gcmode_is_archive(&cmdline))
}

fn gcmode_is_archive(cmdline: &[u8]) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let mut archive = false;
    for (i, arg) in args.iter().enumerate() {
        let name = arg.strip_prefix(b"--").or_else(|| arg.strip_prefix(b"-"));
        let Some(name) = name else { continue };
        // The last --gcmode wins, as in geth's flag parser.
        if name == b"gcmode" {
            archive = args.get(i + 1).is_some_and(|v| *v == b"archive");
        } else if let Some(value) = name.strip_prefix(b"gcmode=") {
            archive = value == b"archive";
        }
    }
    archive
}

/// Whether a NUL-separated command line carries `--datadir <want>` and is not a
/// one-off subcommand (`geth init`, `geth attach`, …).
fn serves_datadir(cmdline: &[u8], want: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if args.first().is_none_or(|a| a.is_empty()) {
        return false;
    }
    let is_subcommand = args
        .iter()
        .skip(1)
        .any(|a| matches!(*a, b"init" | b"attach" | b"db" | b"dumpgenesis"));
    if is_subcommand {
        return false;
    }
    let matches = |dir: &[u8]| {
        std::fs::canonicalize(std::ffi::OsStr::from_bytes_lossy(dir)).is_ok_and(|p| p == want)
    };
    args.windows(2)
        .any(|w| (w[0] == b"--datadir" || w[0] == b"-datadir") && matches(w[1]))
        || args
            .iter()
            .any(|a| a.strip_prefix(b"--datadir=").is_some_and(matches))
}

trait FromBytesLossy {
    fn from_bytes_lossy(bytes: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesLossy for std::ffi::OsStr {
    fn from_bytes_lossy(bytes: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(bytes)
    }
}

/// Process start time (clock ticks since boot), `None` if gone or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Follows a log file: new lines only, across truncation and rotation.
struct LogFollower {
    path: PathBuf,
    file: Option<(std::fs::File, u64)>, // file, inode
    pos: u64,
    partial: Vec<u8>,
    /// The first open skips what is already there (an old geth's lines).
    first_open: bool,
}

impl LogFollower {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            pos: 0,
            partial: Vec::new(),
            first_open: true,
        }
    }

    /// Reads the file from its beginning (a geth the agent just started).
    fn from_start(path: PathBuf) -> Self {
        Self {
            first_open: false,
            ..Self::new(path)
        }
    }

    /// Empties the file once everything in it was read and it passed `max`
    /// bytes (only for a file opened in append mode by its writer). A line
    /// written between the size check and the truncation is lost; at `max`
    /// that is rare, and a stop is judged from lines written later.
    fn empty_when_over(&mut self, max: u64) {
        let Some((file, _)) = &self.file else { return };
        let read_all = file.metadata().is_ok_and(|m| m.len() == self.pos);
        if self.pos <= max || !read_all || !self.partial.is_empty() {
            return;
        }
        match std::fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(f) if f.set_len(0).is_ok() => self.pos = 0,
            _ => tracing::warn!(file = %self.path.display(), "cannot empty geth's output file"),
        }
    }

    fn read_new(&mut self) -> Vec<ProcEvent> {
        let mut events = Vec::new();
        let on_disk = std::fs::metadata(&self.path).ok();
        match (&self.file, &on_disk) {
            (None, Some(meta)) => {
                if let Ok(file) = std::fs::File::open(&self.path) {
                    self.pos = if self.first_open { meta.len() } else { 0 };
                    self.file = Some((file, meta.ino()));
                    self.partial.clear();
                }
                self.first_open = false;
            }
            (None, None) => self.first_open = false,
            (Some((_, inode)), Some(meta)) if *inode != meta.ino() => {
                // Rotated: finish the old file, then start the new one from its beginning.
                self.read_available(&mut events);
                self.file = std::fs::File::open(&self.path)
                    .ok()
                    .map(|f| (f, meta.ino()));
                self.pos = 0;
                self.partial.clear();
            }
            (Some((file, _)), _) => {
                if file.metadata().is_ok_and(|m| m.len() < self.pos) {
                    self.pos = 0; // truncated
                    self.partial.clear();
                }
            }
        }
        self.read_available(&mut events);
        events
    }

    fn read_available(&mut self, events: &mut Vec<ProcEvent>) {
        let Some((file, _)) = &mut self.file else {
            return;
        };
        if file.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        // Bounded per tick; the rest is read on the next one.
        let Ok(n) = file.take(4 * 1024 * 1024).read_to_end(&mut buf) else {
            return;
        };
        self.pos += n as u64;
        for byte in buf {
            if byte == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                if let Some(parsed) = LogLine::parse(&line) {
                    events.push(ProcEvent::Line(parsed));
                } else if !line.trim().is_empty() {
                    events.push(ProcEvent::Text(line));
                }
            } else if self.partial.len() < MAX_LINE_BYTES {
                self.partial.push(byte);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn msgs(events: &[ProcEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                ProcEvent::Line(l) => l.msg.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_missing_geth_binary_is_the_attached_process_own() {
        let here = std::env::current_exe().unwrap();
        assert_eq!(binary_for(&here, 42), here);
        assert_eq!(
            binary_for(Path::new("/nowhere/geth"), 42),
            Path::new("/proc/42/exe")
        );
        assert_eq!(
            binary_for(Path::new("no-such-geth-on-the-path"), 7),
            Path::new("/proc/7/exe")
        );
    }

    #[test]
    fn follower_skips_old_lines_and_survives_truncation_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geth.json");
        std::fs::write(&path, "{\"msg\":\"old\"}\n").unwrap();
        let mut f = LogFollower::new(path.clone());
        assert!(
            f.read_new().is_empty(),
            "lines from before the agent are skipped"
        );

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(file, "{{\"msg\":\"a\"}}\n{{\"msg\":\"b").unwrap();
        assert_eq!(msgs(&f.read_new()), ["a"]);
        writeln!(file, "\"}}").unwrap();
        assert_eq!(
            msgs(&f.read_new()),
            ["b"],
            "a partial line waits for its end"
        );

        std::fs::write(&path, "{\"msg\":\"after truncation\"}\n").unwrap();
        assert_eq!(msgs(&f.read_new()), ["after truncation"]);

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "{{\"msg\":\"last of old\"}}").unwrap();
        std::fs::rename(&path, dir.path().join("geth.json.1")).unwrap();
        std::fs::write(&path, "{\"msg\":\"new file\"}\n").unwrap();
        assert_eq!(msgs(&f.read_new()), ["last of old", "new file"]);
    }

    #[test]
    fn a_read_file_over_the_limit_is_emptied_and_followed_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geth.log");
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut f = LogFollower::from_start(path.clone());
        writeln!(writer, "{{\"msg\":\"one\"}}").unwrap();
        f.empty_when_over(5);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            14,
            "unread lines stay"
        );
        assert_eq!(msgs(&f.read_new()), ["one"]);
        f.empty_when_over(1_000);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            14,
            "under the limit"
        );
        f.empty_when_over(5);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        writeln!(writer, "{{\"msg\":\"two\"}}").unwrap();
        assert_eq!(
            msgs(&f.read_new()),
            ["two"],
            "the writer goes on at the start"
        );
    }

    #[test]
    fn a_missing_log_file_is_read_from_its_start_once_it_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("geth.json");
        let mut f = LogFollower::new(path.clone());
        assert!(f.read_new().is_empty());
        std::fs::write(&path, "{\"msg\":\"first\"}\nnot json\n").unwrap();
        let events = f.read_new();
        assert_eq!(msgs(&events)[0], "first");
        assert_eq!(events[1], ProcEvent::Text("not json".into()));
    }

    #[test]
    fn command_line_matching() {
        let dir = tempfile::tempdir().unwrap();
        let want = std::fs::canonicalize(dir.path()).unwrap();
        let d = want.to_str().unwrap();
        let cl = |args: &[&str]| args.join("\0").into_bytes();
        assert!(serves_datadir(
            &cl(&["/usr/bin/geth", "--datadir", d, "--mine"]),
            &want
        ));
        assert!(serves_datadir(
            &cl(&["geth", &format!("--datadir={d}")]),
            &want
        ));
        assert!(!serves_datadir(
            &cl(&["geth", "--datadir", "/elsewhere"]),
            &want
        ));
        assert!(!serves_datadir(
            &cl(&["geth", "--datadir", d, "attach"]),
            &want
        ));
        assert!(!serves_datadir(b"", &want));
    }

    #[test]
    fn only_geth_itself_is_geth() {
        let cl = |args: &[&str]| args.join("\0").into_bytes();
        let geth = cl(&["geth", "--datadir", "/d"]);
        let agent = cl(&["/usr/bin/geth-agent", "run", "--datadir", "/d"]);
        // By the kernel's executable path.
        assert!(is_geth(&geth, Some(Path::new("/usr/local/bin/geth")), None));
        assert!(is_geth(
            &geth,
            Some(Path::new("/usr/local/bin/geth (deleted)")),
            None
        ));
        assert!(!is_geth(
            &agent,
            Some(Path::new("/usr/bin/geth-agent")),
            None
        ));
        assert!(
            !is_geth(&geth, Some(Path::new("/usr/bin/geth-agent")), None),
            "argv[0] can lie"
        );
        let custom = Path::new("/opt/geth-1.13.15");
        assert!(is_geth(&geth, Some(custom), Some(custom)));
        assert!(!is_geth(&geth, Some(custom), Some(Path::new("/opt/other"))));
        // Without /proc/PID/exe (another user's process): argv[0], exactly.
        assert!(is_geth(
            &cl(&["/usr/bin/geth", "--datadir", "/d"]),
            None,
            None
        ));
        assert!(!is_geth(&agent, None, None));
        assert!(!is_geth(&cl(&["gethx"]), None, None));
        assert!(!is_geth(b"", None, None));
    }

    #[test]
    fn the_agent_does_not_find_itself() {
        // This test binary runs with no --datadir; a scratch datadir has no geth.
        let dir = tempfile::tempdir().unwrap();
        let target = AttachTarget {
            datadir: dir.path().to_owned(),
            ..AttachTarget::default()
        };
        assert_eq!(find_geth(&target), None);
    }

    #[test]
    fn own_process_has_a_start_time() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }

    #[test]
    fn the_gcmode_is_read_from_the_command_line() {
        let line = |args: &[&str]| args.join("\0").into_bytes();
        assert!(gcmode_is_archive(&line(&["geth", "--gcmode", "archive"])));
        assert!(gcmode_is_archive(&line(&["geth", "-gcmode=archive"])));
        assert!(!gcmode_is_archive(&line(&["geth", "--gcmode=full"])));
        assert!(!gcmode_is_archive(&line(&["geth", "--gcmode"])));
        assert!(!gcmode_is_archive(&line(&[
            "geth",
            "--gcmode",
            "archive",
            "--gcmode=full"
        ])));
        assert!(!gcmode_is_archive(&line(&[
            "geth",
            "--syncmode",
            "archive"
        ])));
    }
}
