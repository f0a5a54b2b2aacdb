//! The host-wide QP count of standalone mode (the original design's "global" limit), shared
//! by every process on the host, across users, without trusting any other user.
//!
//! A directory (default `/dev/shm/rdmaq-host-qp.v4`, sticky and world-writable like /tmp,
//! or made by the admin) holds one table per user: `uid-<uid>`, slots of (pid, process start
//! time, program image, QPs) for that user's processes, mode 0644 — everyone reads it, only
//! its owner writes it — and `uid-<uid>.lock`, mode 0600, which only that user's processes
//! can take. A process maps its own user's table and updates its slot with atomics, so a QP
//! creation under the cap costs no lock. Other users' tables are read with `pread`, never
//! mapped: another user truncating or scribbling over their own table can make its numbers
//! wrong (slots are checked before they count against a full host), never fault or hang
//! anyone else. Lock waits are bounded.
//!
//! A reservation adds to the process's own slot first and then sums every table: a grant is
//! made only if that sum, which includes every earlier grant, is within the limit, so the
//! cap holds. Only a reservation that finds the host full does more: it withdraws its
//! addition, clears its own user's slots of processes that are gone (a process killed with
//! SIGKILL stops counting as soon as its QPs are needed), ignores other users' slots that
//! name no live process of theirs, and decides again.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    fs::{File, OpenOptions},
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst},
    time::{Duration, Instant},
};

/// At most this many processes of one user hold QPs at once. Slots are claimed from the
/// front, and sums stop at the highest slot ever claimed.
const SLOTS: usize = 4096;
const SLOT: usize = 24;
/// Magic (8 bytes), then the number of slots ever claimed (4 bytes), then padding.
const HEADER: usize = 16;
const LEN: usize = HEADER + SLOTS * SLOT;
const MAGIC: u64 = u64::from_le_bytes(*b"RDMAQHT4");
/// A slot claiming more QPs than this is not believed (no process holds a million QPs).
const MAX_SLOT_QPS: u32 = 1 << 20;
/// The longest wait for a lock another process holds: then the table is unavailable.
const LOCK_WAIT: Duration = Duration::from_millis(200);
/// How often the list of other users' tables is read again.
const RELIST: Duration = Duration::from_secs(1);

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

/// The real uid of process `pid`.
fn uid_of(pid: u32) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
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

/// One slot of this user's table, seen through atomics.
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

/// The directory the tables live in, refused if another user could take it over: it must
/// be a real directory (not a symbolic link) owned by root or by us, or sticky (like /tmp)
/// when others may write it. Made sticky and world-writable if missing.
fn open_dir(dir: &Path, uid: u32) -> io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::create_dir(dir) {
                Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))?,
                // Another process made it meanwhile: checked below like any other.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let m = std::fs::symlink_metadata(dir)?;
    let mode = m.mode();
    let others_write = mode & 0o002 != 0;
    let trusted_owner = m.uid() == 0 || m.uid() == uid;
    if !m.file_type().is_dir() || !trusted_owner || (others_write && mode & 0o1000 == 0) {
        return Err(io::Error::other(format!(
            "{} is not a directory rdmaq can trust (owner uid {}, mode {:o}): it must be owned \
             by root or by this user, and sticky if others may write it",
            dir.display(),
            m.uid(),
            mode & 0o7777
        )));
    }
    Ok(())
}

/// Opens (or creates) a file of this user in the tables' directory, never following a link,
/// and checks that it is a plain file of ours.
fn own_file(path: &Path, mode: u32, uid: u32) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    let m = file.metadata()?;
    if !m.file_type().is_file() || m.uid() != uid || m.nlink() != 1 {
        return Err(io::Error::other(format!(
            "{} is not a table of uid {uid}",
            path.display()
        )));
    }
    // The umask must not hide the table from other users' sums (nor open the lock to them).
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    Ok(file)
}

/// Another user's table, read with `pread` only.
struct Other {
    uid: u32,
    file: File,
}

struct Others {
    tables: Vec<Other>,
    listed: Option<Instant>,
}

pub struct HostTable {
    dir: PathBuf,
    uid: u32,
    lock: File,
    map: NonNull<u8>,
    pid: u32,
    start: u64,
    image: u64,
    /// This process's slot, once it has one.
    mine: Cell<Option<usize>>,
    others: RefCell<Others>,
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

/// Takes `file`'s lock, waiting at most LOCK_WAIT.
fn lock(file: &File) -> io::Result<Locked<'_>> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Locked(file)),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the host QP table's lock was held for over {LOCK_WAIT:?}"),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// The QPs another user's table claims, slot by slot: (pid, start, qps) of each slot in
/// use, as far as the file can be read (a short or failed read is an empty table).
fn read_other(file: &File) -> Vec<(u32, u64, u32)> {
    let mut header = [0u8; HEADER];
    if file.read_exact_at(&mut header, 0).is_err()
        || u64::from_le_bytes(header[..8].try_into().expect("8 bytes")) != MAGIC
    {
        return Vec::new();
    }
    let claimed =
        (u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize).min(SLOTS);
    let mut slots = vec![0u8; claimed * SLOT];
    let n = file.read_at(&mut slots, HEADER as u64).unwrap_or(0);
    slots[..n - n % SLOT]
        .chunks_exact(SLOT)
        .filter_map(|s| {
            let pid = u32::from_le_bytes(s[0..4].try_into().expect("4 bytes"));
            let qps = u32::from_le_bytes(s[4..8].try_into().expect("4 bytes"));
            let start = u64::from_le_bytes(s[8..16].try_into().expect("8 bytes"));
            (pid != 0 && qps != 0).then_some((pid, start, qps))
        })
        .collect()
}

impl HostTable {
    /// Opens this user's table in `dir` (made if missing), and finds the other users'.
    pub fn open(dir: &Path) -> io::Result<HostTable> {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        open_dir(dir, uid)?;
        let file = own_file(&dir.join(format!("uid-{uid}")), 0o644, uid)?;
        let lock_file = own_file(&dir.join(format!("uid-{uid}.lock")), 0o600, uid)?;
        {
            // The first process of this user sizes the table (zeros: no slot claimed) and
            // marks it; one that finds it damaged (by this same user) starts it afresh.
            let _locked = lock(&lock_file)?;
            let mut magic = [0u8; 8];
            let len = file.metadata()?.len();
            let marked = len == LEN as u64
                && file.read_exact_at(&mut magic, 0).is_ok()
                && u64::from_le_bytes(magic) == MAGIC;
            if !marked {
                file.set_len(0)?;
                file.set_len(LEN as u64)?;
                file.write_all_at(&MAGIC.to_le_bytes(), 0)?;
            }
        }
        // SAFETY: a fresh shared mapping of the whole file, which is LEN bytes long (checked
        // above; only this user's processes can resize it). No Rust reference covers it
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
        Ok(HostTable {
            dir: dir.to_path_buf(),
            uid,
            lock: lock_file,
            map,
            pid,
            start,
            image: image_tag(),
            mine: Cell::new(None),
            others: RefCell::new(Others {
                tables: Vec::new(),
                listed: None,
            }),
        })
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

    /// QPs of every claimed slot of this user's table, live or not.
    fn own_sum(&self) -> u64 {
        (0..self.in_use())
            .map(|i| u64::from(self.slot(i).qps.load(SeqCst).min(MAX_SLOT_QPS)))
            .sum()
    }

    /// The other users' tables, listed again at most every RELIST: `uid-<n>` files of
    /// user `n`, full size, opened read-only (never mapped, never locked).
    fn refresh_others(&self, force: bool) {
        let mut others = self.others.borrow_mut();
        if !force && others.listed.is_some_and(|t| t.elapsed() < RELIST) {
            return;
        }
        others.listed = Some(Instant::now());
        others.tables.clear();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("uid-"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if uid == self.uid {
                continue;
            }
            let Ok(file) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(entry.path())
            else {
                continue;
            };
            let ok = file
                .metadata()
                .is_ok_and(|m| m.file_type().is_file() && m.uid() == uid && m.len() == LEN as u64);
            if ok {
                others.tables.push(Other { uid, file });
            }
        }
    }

    /// QPs the other users' tables claim. With `checked`, only slots of live processes of
    /// the table's own user count (another user's table cannot charge anyone else's pids,
    /// nor processes that are gone).
    fn others_sum(&self, checked: bool) -> u64 {
        self.refresh_others(checked);
        let others = self.others.borrow();
        let mut live: HashMap<u32, bool> = HashMap::new();
        others
            .tables
            .iter()
            .flat_map(|o| read_other(&o.file).into_iter().map(move |s| (o.uid, s)))
            .filter(|(uid, (pid, start, _))| {
                !checked
                    || *live.entry(*pid).or_insert_with(|| {
                        uid_of(*pid) == Some(*uid) && start_time(*pid) == Some(*start)
                    })
            })
            .map(|(_, (_, _, qps))| u64::from(qps.min(MAX_SLOT_QPS)))
            .sum()
    }

    /// Frees this user's slots of processes that are gone. Under the lock.
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
        let _guard = lock(&self.lock)?;
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
        if self.own_sum() + self.others_sum(false) <= limit {
            return Ok(Reserve::Granted);
        }
        // Full, or nearly: decide without our addition, counting only slots of live
        // processes (ours cleared under our lock; others' checked).
        let _guard = lock(&self.lock)?;
        mine.qps.fetch_sub(delta, SeqCst);
        self.clear_dead();
        let used = self.own_sum() + self.others_sum(true);
        if used + u64::from(delta) > limit {
            return Ok(Reserve::Full { used, limit });
        }
        mine.qps.fetch_add(delta, SeqCst);
        // A reservation elsewhere may have added and looked meanwhile; it was granted if it
        // saw room, so look again (two racing for the last QPs may both step back: the cap
        // holds, reached or not).
        let used = self.own_sum() + self.others_sum(true);
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
        let _guard = lock(&self.lock)?;
        self.clear_dead();
        Ok(self.own_sum() + self.others_sum(true))
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

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rdmaq-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
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
        let d = dir("limit");
        let t = HostTable::open(&d).unwrap();
        assert_eq!(t.add(2, 3).unwrap(), Reserve::Granted);
        assert_eq!(t.add(1, 3).unwrap(), Reserve::Granted);
        assert_eq!(t.add(1, 3).unwrap(), Reserve::Full { used: 3, limit: 3 });
        t.add(-3, 3).unwrap();
        assert_eq!(t.total().unwrap(), 0);
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o1777, "the directory is sticky and shared");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn slots_of_dead_processes_do_not_count() {
        let d = dir("dead");
        let t = HostTable::open(&d).unwrap();
        // A slot left by a process that no longer exists (pid 0x7ffffff0 is never live).
        plant(&t, 7, 0x7fff_fff0, 50, 1);
        // Our own pid with a different start time: an earlier process that reused it.
        plant(&t, 8, t.pid, 50, t.start + 1);
        assert_eq!(t.total().unwrap(), 0);
        assert_eq!(t.add(4, 4).unwrap(), Reserve::Granted);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_slot_left_by_this_process_before_an_exec_is_taken_over_empty() {
        let d = dir("exec");
        let t = HostTable::open(&d).unwrap();
        plant(&t, 3, t.pid, 40, t.start);
        t.slot(3).image.store(t.image ^ 1, SeqCst);
        assert_eq!(t.add(5, 5).unwrap(), Reserve::Granted);
        assert_eq!(t.mine.get(), Some(3));
        assert_eq!(t.total().unwrap(), 5);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn processes_sharing_the_table_never_exceed_the_limit_together() {
        // Several "processes" (tables of their own, each with its own slot) on one file,
        // racing for the last QPs.
        let d = dir("race");
        let limit = 50;
        let granted: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let d = &d;
                    s.spawn(move || {
                        let t = HostTable::open(d).unwrap();
                        let mut mine = 0u64;
                        for _ in 0..40 {
                            if t.add(1, limit).unwrap() == Reserve::Granted {
                                mine += 1;
                            }
                        }
                        (mine, t)
                    })
                })
                .collect();
            let tables: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let total: u64 = tables.iter().map(|(m, _)| m).sum();
            assert_eq!(tables[0].1.total().unwrap(), total);
            total
        });
        assert_eq!(granted, limit, "exactly the limit is reached, never more");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_held_lock_costs_a_bounded_wait_not_a_hang() {
        let d = dir("lock");
        let t = HostTable::open(&d).unwrap();
        let holder = File::open(d.join(format!("uid-{}.lock", t.uid))).unwrap();
        holder.lock().unwrap();
        let started = Instant::now();
        let err = t.add(1, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_directory_another_user_could_take_over_is_refused() {
        let d = dir("untrusted");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        // Not sticky while world-writable: anyone could replace our table.
        let err = HostTable::open(&d).err().expect("refused");
        assert!(err.to_string().contains("sticky"), "{err}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn other_users_tables_are_read_not_mapped_and_checked_when_it_matters() {
        let d = dir("others");
        let t = HostTable::open(&d).unwrap();
        // Another user's table (owned by us here: unit tests run as one user; the cross-user
        // test in tests/hostile_node.rs uses real users) naming us: it is ignored, since its
        // name says another uid than its owner.
        let fake = d.join(format!("uid-{}", t.uid + 1));
        std::fs::write(&fake, vec![0u8; LEN]).unwrap();
        t.refresh_others(true);
        assert!(t.others.borrow().tables.is_empty());
        // Truncated, garbled or short tables read as empty, never a fault.
        let f = File::open(&fake).unwrap();
        std::fs::write(&fake, b"junk").unwrap();
        assert!(read_other(&f).is_empty());
        let mut table = vec![0u8; HEADER + SLOT];
        table[..8].copy_from_slice(&MAGIC.to_le_bytes());
        table[8..12].copy_from_slice(&(SLOTS as u32 * 2).to_le_bytes());
        table[HEADER..HEADER + 4].copy_from_slice(&1u32.to_le_bytes());
        table[HEADER + 4..HEADER + 8].copy_from_slice(&7u32.to_le_bytes());
        std::fs::write(&fake, &table).unwrap();
        assert_eq!(
            read_other(&f),
            [(1, 0, 7)],
            "what is there, as far as it goes"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
