//! The host-wide QP count of standalone mode (the original design's "global" limit): a small
//! table of (pid, process start time, QPs) slots in one file under /dev/shm, read and updated
//! under `flock`. The kernel drops the lock of a process that dies, and a slot whose process
//! is gone (or whose pid was reused, seen by a different start time) no longer counts, so a
//! process killed with SIGKILL stops counting at the next look.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// At most this many processes hold QPs at once; the file grows only as far as the highest
/// slot in use, so a lookup reads a few hundred bytes, not the whole table.
const SLOTS: usize = 4096;
const SLOT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slot {
    pid: u32,
    qps: u32,
    start: u64,
}

impl Slot {
    fn read(b: &[u8]) -> Slot {
        Slot {
            pid: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            qps: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            start: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
        }
    }

    fn bytes(&self) -> [u8; SLOT] {
        let mut b = [0u8; SLOT];
        b[0..4].copy_from_slice(&self.pid.to_le_bytes());
        b[4..8].copy_from_slice(&self.qps.to_le_bytes());
        b[8..16].copy_from_slice(&self.start.to_le_bytes());
        b
    }
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/PID/stat`), which
/// tells a process from a later one that reused its pid; `None` if there is no such process
/// or it has exited (a zombie holds no RDMA resources: its files are closed).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let mut rest = stat[stat.rfind(')')? + 2..].split_whitespace();
    let state = rest.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    rest.nth(18)?.parse().ok()
}

fn alive(slot: &Slot) -> bool {
    slot.pid != 0 && start_time(slot.pid) == Some(slot.start)
}

/// Outcome of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    Granted,
    /// The host already holds `used` QPs against `limit`.
    Full {
        used: u64,
        limit: u64,
    },
}

pub struct HostTable {
    file: File,
    pid: u32,
    start: u64,
    /// This process's slot and its QP count, once it has one.
    mine: std::cell::Cell<Option<(usize, u32)>>,
}

struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl HostTable {
    pub fn open(path: &Path) -> io::Result<HostTable> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o666)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        // Every user's processes share the table; the umask must not lock others out.
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
        let pid = std::process::id();
        let start =
            start_time(pid).ok_or_else(|| io::Error::other("cannot read /proc/self/stat"))?;
        Ok(HostTable {
            file,
            pid,
            start,
            mine: std::cell::Cell::new(None),
        })
    }

    fn lock(&self) -> io::Result<Locked<'_>> {
        self.file.lock()?;
        Ok(Locked(&self.file))
    }

    /// The slots up to the highest one ever used, plus one free slot past them.
    fn slots(&self) -> io::Result<Vec<Slot>> {
        let len = (self.file.metadata()?.len() as usize).min(SLOTS * SLOT);
        let mut buf = vec![0u8; len];
        let n = self.file.read_at(&mut buf, 0)?;
        buf.truncate(n - n % SLOT);
        let mut slots: Vec<Slot> = buf.chunks(SLOT).map(Slot::read).collect();
        if slots.len() < SLOTS {
            slots.push(Slot::default());
        }
        Ok(slots)
    }

    fn write_slot(&self, i: usize, s: &Slot) -> io::Result<()> {
        self.file.write_all_at(&s.bytes(), (i * SLOT) as u64)
    }

    /// Adds `delta` QPs (positive: reserve, checked against `limit`; negative: release) to
    /// this process's slot. Dead processes' slots are cleared on the way.
    pub fn add(&self, delta: i64, limit: u64) -> io::Result<Reserve> {
        let _guard = self.lock()?;
        // A release only touches this process's own slot: no other process writes it.
        if delta < 0
            && let Some((i, qps)) = self.mine.get()
        {
            let qps = (i64::from(qps) + delta).max(0) as u32;
            self.write_slot(
                i,
                &Slot {
                    pid: self.pid,
                    qps,
                    start: self.start,
                },
            )?;
            self.mine.set(Some((i, qps)));
            return Ok(Reserve::Granted);
        }
        let slots = self.slots()?;
        let mut mine = None;
        let mut free = None;
        let mut used: u64 = 0;
        for (i, s) in slots.iter().enumerate() {
            if s.pid == self.pid && s.start == self.start {
                mine = Some(i);
                used += u64::from(s.qps);
            } else if alive(s) {
                used += u64::from(s.qps);
            } else {
                if s.pid != 0 {
                    self.write_slot(i, &Slot::default())?;
                }
                free.get_or_insert(i);
            }
        }
        if delta > 0 && used + delta as u64 > limit {
            return Ok(Reserve::Full { used, limit });
        }
        let Some(i) = mine.or(free) else {
            return Err(io::Error::other("host QP table is full"));
        };
        let current = if mine.is_some() { slots[i].qps } else { 0 };
        let qps = (i64::from(current) + delta).max(0) as u32;
        let slot = if qps == 0 {
            Slot::default()
        } else {
            Slot {
                pid: self.pid,
                qps,
                start: self.start,
            }
        };
        self.write_slot(i, &slot)?;
        Ok(Reserve::Granted)
    }

    /// QPs held on the host by live processes.
    #[cfg(test)]
    pub fn total(&self) -> io::Result<u64> {
        let _guard = self.lock()?;
        Ok(self
            .slots()?
            .iter()
            .filter(|s| alive(s))
            .map(|s| u64::from(s.qps))
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> (HostTable, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("rdmaq-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        (HostTable::open(&path).unwrap(), path)
    }

    #[test]
    fn reserves_up_to_the_limit_and_releases() {
        let (t, path) = table("limit");
        assert_eq!(t.add(2, 3).unwrap(), Reserve::Granted);
        assert_eq!(t.add(1, 3).unwrap(), Reserve::Granted);
        assert_eq!(t.add(1, 3).unwrap(), Reserve::Full { used: 3, limit: 3 });
        t.add(-3, 3).unwrap();
        assert_eq!(t.total().unwrap(), 0);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn slots_of_dead_processes_do_not_count() {
        let (t, path) = table("dead");
        // A slot left by a process that no longer exists (pid 0x7ffffff0 is never live).
        t.write_slot(
            7,
            &Slot {
                pid: 0x7fff_fff0,
                qps: 50,
                start: 1,
            },
        )
        .unwrap();
        // Our own pid with a different start time: an earlier process that reused it.
        t.write_slot(
            8,
            &Slot {
                pid: t.pid,
                qps: 50,
                start: t.start + 1,
            },
        )
        .unwrap();
        assert_eq!(t.total().unwrap(), 0);
        assert_eq!(t.add(4, 4).unwrap(), Reserve::Granted);
        let _ = std::fs::remove_file(path);
    }
}
