//! The host-wide QP count of standalone mode (the original design's "global" limit): a table
//! of (pid, process start time, program image, QPs) slots in one file under /dev/shm,
//! mapped into every process and updated with atomics, so that a QP creation or destruction
//! under the cap costs no system call.
//!
//! A reservation adds to the process's own slot first and then sums the slots: a grant is
//! made only if that sum, which includes every earlier grant, is within the limit, so the
//! cap holds exactly. Only a reservation that finds the table full takes the file's `flock`:
//! it withdraws its addition, clears the slots of processes that are gone (or whose pid was
//! reused, seen by a different start time) — so a process killed with SIGKILL stops counting
//! as soon as its QPs are needed — and decides again. Two reservations racing for the last
//! QPs are settled under the lock, so the cap is reached, not undershot.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{OpenOptionsExt, PermissionsExt},
    },
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst},
};

/// At most this many processes hold QPs at once. Slots are claimed from the front, and sums
/// stop at the highest slot ever claimed, so a lookup reads a few cache lines, not the table.
const SLOTS: usize = 4096;
const SLOT: usize = 24;
/// Magic (8 bytes), then the number of slots ever claimed (4 bytes), then padding.
const HEADER: usize = 16;
const LEN: usize = HEADER + SLOTS * SLOT;
const MAGIC: u64 = u64::from_le_bytes(*b"RDMAQHT3");

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

/// One slot of the shared table, seen through atomics.
struct Slot<'a> {
    pid: &'a AtomicU32,
    qps: &'a AtomicU32,
    start: &'a AtomicU64,
    /// Which program image of the process claimed it: a process keeps its pid and start
    /// time across `exec`, but its RDMA objects die with the old image.
    image: &'a AtomicU64,
}

/// A tag of this program image: the random bytes the kernel gives every `exec` (AT_RANDOM).
fn image_tag() -> u64 {
    // SAFETY: getauxval only reads the auxiliary vector.
    let at_random = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u8;
    if at_random.is_null() {
        return 0;
    }
    let mut tag = [0u8; 8];
    // SAFETY: AT_RANDOM points at 16 bytes the kernel placed on the initial stack, which
    // stay mapped for the life of the image; the first 8 are read.
    unsafe { std::ptr::copy_nonoverlapping(at_random, tag.as_mut_ptr(), 8) };
    u64::from_le_bytes(tag)
}

pub struct HostTable {
    file: File,
    map: NonNull<u8>,
    pid: u32,
    start: u64,
    image: u64,
    /// This process's slot, once it has one.
    mine: std::cell::Cell<Option<usize>>,
}

// SAFETY: the mapping is shared memory accessed only through atomics; the table is used
// under the library's process lock, and moving it between threads moves only the pointer.
unsafe impl Send for HostTable {}

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
        {
            // The first process sizes the file (zeros: no slot claimed) and marks it.
            file.lock()?;
            let _locked = Locked(&file);
            let len = file.metadata()?.len();
            if len == 0 {
                file.set_len(LEN as u64)?;
                std::os::unix::fs::FileExt::write_all_at(&file, &MAGIC.to_le_bytes(), 0)?;
            } else if len != LEN as u64 {
                return Err(io::Error::other(format!(
                    "{} is {len} bytes, not an rdmaq host QP table ({LEN} bytes)",
                    path.display()
                )));
            }
        }
        // SAFETY: a fresh shared mapping of the whole file, which is LEN bytes long (checked
        // above; it never shrinks: only this code sizes it). No Rust reference covers it
        // except through atomics.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap"))?;
        let pid = std::process::id();
        let start =
            start_time(pid).ok_or_else(|| io::Error::other("cannot read /proc/self/stat"))?;
        let table = HostTable {
            file,
            map,
            pid,
            start,
            image: image_tag(),
            mine: std::cell::Cell::new(None),
        };
        // SAFETY: offset 0 is inside the mapping and 8-aligned (mappings are page-aligned).
        let magic = unsafe { &*table.map.as_ptr().cast::<AtomicU64>() }.load(SeqCst);
        if magic != MAGIC {
            return Err(io::Error::other(format!(
                "{} is not an rdmaq host QP table",
                path.display()
            )));
        }
        Ok(table)
    }

    /// Slots ever claimed: sums stop here.
    fn claimed(&self) -> &AtomicU32 {
        // SAFETY: offset 8 is inside the mapping and 4-aligned; shared memory is only ever
        // accessed through atomics.
        unsafe { &*self.map.as_ptr().add(8).cast::<AtomicU32>() }
    }

    fn slot(&self, i: usize) -> Slot<'_> {
        assert!(i < SLOTS, "slot {i} out of the table");
        // SAFETY: slot i lies inside the mapping (i < SLOTS), 24 bytes at an 8-aligned
        // offset; each field is accessed only as the atomic of its width.
        unsafe {
            let base = self.map.as_ptr().add(HEADER + i * SLOT);
            Slot {
                pid: &*base.cast::<AtomicU32>(),
                qps: &*base.add(4).cast::<AtomicU32>(),
                start: &*base.add(8).cast::<AtomicU64>(),
                image: &*base.add(16).cast::<AtomicU64>(),
            }
        }
    }

    fn in_use(&self) -> usize {
        (self.claimed().load(SeqCst) as usize).min(SLOTS)
    }

    fn lock(&self) -> io::Result<Locked<'_>> {
        self.file.lock()?;
        Ok(Locked(&self.file))
    }

    /// QPs of every claimed slot, live or not.
    fn sum(&self) -> u64 {
        (0..self.in_use())
            .map(|i| u64::from(self.slot(i).qps.load(SeqCst)))
            .sum()
    }

    /// Frees the slots of processes that are gone. Under the lock.
    fn clear_dead(&self) {
        for i in 0..self.in_use() {
            let s = self.slot(i);
            let pid = s.pid.load(SeqCst);
            if pid == 0 || Some(i) == self.mine.get() {
                continue;
            }
            if start_time(pid) != Some(s.start.load(SeqCst)) {
                s.qps.store(0, SeqCst);
                s.pid.store(0, SeqCst);
            }
        }
    }

    /// This process's slot, claimed (under the lock) on first use.
    fn my_slot(&self) -> io::Result<usize> {
        if let Some(i) = self.mine.get() {
            return Ok(i);
        }
        let _guard = self.lock()?;
        self.clear_dead();
        let n = self.in_use();
        // A slot of this process from before an `exec` (same pid and start time, another
        // image) counts objects that died with the old image: taken over, emptied.
        let earlier = (0..n).find(|&i| {
            let s = self.slot(i);
            s.pid.load(SeqCst) == self.pid
                && s.start.load(SeqCst) == self.start
                && s.image.load(SeqCst) != self.image
        });
        let free = || (0..n).find(|&i| self.slot(i).pid.load(SeqCst) == 0);
        let i = match earlier.or_else(free) {
            Some(i) => i,
            None if n < SLOTS => {
                self.claimed().store(n as u32 + 1, SeqCst);
                n
            }
            None => return Err(io::Error::other("host QP table is full")),
        };
        let s = self.slot(i);
        s.qps.store(0, SeqCst);
        s.start.store(self.start, SeqCst);
        s.image.store(self.image, SeqCst);
        s.pid.store(self.pid, SeqCst);
        self.mine.set(Some(i));
        Ok(i)
    }

    /// Adds `delta` QPs (positive: reserve, checked against `limit`; negative: release) to
    /// this process's slot.
    pub fn add(&self, delta: i64, limit: u64) -> io::Result<Reserve> {
        if delta <= 0 {
            if let Some(i) = self.mine.get() {
                let back = u32::try_from(delta.unsigned_abs()).unwrap_or(u32::MAX);
                let _ = self
                    .slot(i)
                    .qps
                    .fetch_update(SeqCst, SeqCst, |q| Some(q.saturating_sub(back)));
            }
            return Ok(Reserve::Granted);
        }
        let delta = u32::try_from(delta).unwrap_or(u32::MAX);
        let mine = self.slot(self.my_slot()?);
        // Fast path: add first, then look. Every earlier grant added before it looked, so
        // this sum includes it.
        mine.qps.fetch_add(delta, SeqCst);
        if self.sum() <= limit {
            return Ok(Reserve::Granted);
        }
        // Full, or nearly: decide under the lock, without our addition, after clearing the
        // slots of processes that are gone.
        let _guard = self.lock()?;
        mine.qps.fetch_sub(delta, SeqCst);
        self.clear_dead();
        let used = self.sum();
        if used + u64::from(delta) > limit {
            return Ok(Reserve::Full { used, limit });
        }
        mine.qps.fetch_add(delta, SeqCst);
        // A fast-path reservation may have added and looked meanwhile; it was granted if it
        // saw room, so look again.
        let used = self.sum();
        if used > limit {
            mine.qps.fetch_sub(delta, SeqCst);
            return Ok(Reserve::Full {
                used: used - u64::from(delta),
                limit,
            });
        }
        Ok(Reserve::Granted)
    }

    /// QPs held on the host by live processes.
    #[cfg(test)]
    pub fn total(&self) -> io::Result<u64> {
        let _guard = self.lock()?;
        self.clear_dead();
        Ok(self.sum())
    }
}

impl Drop for HostTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, of LEN bytes, unmapped once; no reference into
        // it outlives `self`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), LEN) };
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

    /// Claims slot `i` for an arbitrary (pid, start).
    fn plant(t: &HostTable, i: usize, pid: u32, qps: u32, start: u64) {
        let s = t.slot(i);
        s.qps.store(qps, SeqCst);
        s.start.store(start, SeqCst);
        s.pid.store(pid, SeqCst);
        t.claimed().fetch_max(i as u32 + 1, SeqCst);
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
        plant(&t, 7, 0x7fff_fff0, 50, 1);
        // Our own pid with a different start time: an earlier process that reused it.
        plant(&t, 8, t.pid, 50, t.start + 1);
        assert_eq!(t.total().unwrap(), 0);
        assert_eq!(t.add(4, 4).unwrap(), Reserve::Granted);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_slot_left_by_this_process_before_an_exec_is_taken_over_empty() {
        let (t, path) = table("exec");
        plant(&t, 3, t.pid, 40, t.start);
        t.slot(3).image.store(t.image ^ 1, SeqCst);
        assert_eq!(t.add(5, 5).unwrap(), Reserve::Granted);
        assert_eq!(t.mine.get(), Some(3));
        assert_eq!(t.total().unwrap(), 5);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn processes_sharing_the_table_never_exceed_the_limit_together() {
        // Several "processes" (tables of their own, each with its own slot) on one file,
        // racing for the last QPs.
        let path = std::env::temp_dir().join(format!("rdmaq-host-race-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let limit = 50;
        let granted: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|k| {
                    let path = &path;
                    s.spawn(move || {
                        let t = HostTable::open(path).unwrap();
                        let mut mine = 0u64;
                        for _ in 0..40 {
                            if t.add(1, limit).unwrap() == Reserve::Granted {
                                mine += 1;
                            }
                        }
                        (k, mine, t)
                    })
                })
                .collect();
            let tables: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let total: u64 = tables.iter().map(|(_, m, _)| m).sum();
            // Each table claimed a slot of its own: the table's sum is what they hold.
            assert_eq!(tables[0].2.total().unwrap(), total);
            total
        });
        assert_eq!(granted, limit, "exactly the limit is reached, never more");
        let _ = std::fs::remove_file(path);
    }
}
