//! The geth process and its datadir, sampled from the OS (sysinfo, statvfs).

use std::path::Path;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::Metrics;

/// Samples one process at a time; remembers CPU time to feed a counter.
pub struct ProcessSampler {
    system: Option<System>,
    last: Option<(u32, u64)>, // pid, accumulated cpu ms
}

impl Default for ProcessSampler {
    fn default() -> Self {
        Self {
            system: System::new().ok(),
            last: None,
        }
    }
}

impl ProcessSampler {
    pub fn sample(&mut self, pid: Option<u32>, metrics: &Metrics) {
        let (Some(pid), Some(system)) = (pid, self.system.as_mut()) else {
            metrics.geth_up.set(0);
            return;
        };
        let spid = Pid::from_u32(pid);
        let kind = ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .with_tasks();
        system.refresh_processes_specifics(ProcessesToUpdate::Some(&[spid]), true, kind);
        let Some(process) = system.process(spid) else {
            metrics.geth_up.set(0);
            return;
        };
        metrics.geth_up.set(1);
        metrics
            .geth_resident_memory_bytes
            .set(process.memory() as i64);
        if let Some(tasks) = process.tasks() {
            metrics.geth_threads.set(tasks.len() as i64);
        }
        if let Some(fds) = process.open_files() {
            metrics.geth_open_fds.set(fds as i64);
        }
        let cpu_ms = process.accumulated_cpu_time();
        let since = match self.last {
            Some((last_pid, last_ms)) if last_pid == pid => cpu_ms.saturating_sub(last_ms),
            _ => cpu_ms, // a new process: all its CPU time is new
        };
        metrics.geth_cpu_seconds.inc_by(since as f64 / 1000.0);
        self.last = Some((pid, cpu_ms));
    }
}

/// Free bytes for unprivileged users on the datadir's file system.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Total size of the files under `path` (symlinks not followed).
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_a_live_process_and_a_folder() {
        let metrics = Metrics::new(None);
        let mut sampler = ProcessSampler::default();
        sampler.sample(Some(std::process::id()), &metrics);
        let text = metrics.encode();
        assert!(text.contains("clique_geth_up 1"), "{text}");
        assert!(
            !text.contains("clique_geth_resident_memory_bytes 0\n"),
            "{text}"
        );
        sampler.sample(None, &metrics);
        assert!(metrics.encode().contains("clique_geth_up 0"));

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/f"), [0u8; 1000]).unwrap();
        assert_eq!(dir_size(dir.path()), 1000);
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }
}
