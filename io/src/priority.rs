//! CPU priority of production background threads (the backup worker). Never called by
//! the deterministic core: a simulated run has one thread and no scheduler.

/// Lower the calling thread's CPU priority to `nice` (0 is the default, 19 the
/// lowest), so that foreground work on a busy machine preempts it: the Linux
/// scheduler gives a thread at nice 10 about a tenth of the CPU time of one at 0 when
/// both want it, and all it can get otherwise. CockroachDB's backups take CPU only
/// when foreground work leaves it idle for the same reason. On Linux the nice value is
/// per thread (`setpriority(PRIO_PROCESS, gettid())`); elsewhere this does nothing.
/// Raising priority (a lower `nice`) needs privileges and may fail.
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    imp::set_thread_nice(nice)
}

/// Put the calling thread's disk I/O in the idle class (`ionice -c3`): the block
/// layer's scheduler (mq-deadline, bfq) serves it only when no other class waits, with
/// aging against starvation. It covers reads and the writeback the thread starts
/// itself (`File::write_behind`, `sync_data`), not the kernel flusher's. On Linux only;
/// elsewhere, and under a scheduler without classes (`none`), it does nothing.
pub fn set_thread_io_idle() -> std::io::Result<()> {
    imp::set_thread_io_idle()
}

#[cfg(target_os = "linux")]
mod imp {
    /// `IOPRIO_WHO_PROCESS` and `IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)` from
    /// linux/ioprio.h (the class lives in the bits above 13).
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_IDLE: libc::c_long = 3 << 13;

    pub(super) fn set_thread_io_idle() -> std::io::Result<()> {
        // SAFETY: a raw syscall with integer arguments only; the kernel checks them.
        #[allow(unsafe_code)]
        let rc = unsafe {
            let tid = libc::gettid();
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                libc::c_long::from(tid),
                IOPRIO_IDLE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    pub(super) fn set_thread_nice(nice: i32) -> std::io::Result<()> {
        // SAFETY: `gettid` has no preconditions; `setpriority` reads no memory of
        // ours and the kernel checks its arguments (EINVAL, EPERM, ESRCH).
        #[allow(unsafe_code)]
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn set_thread_io_idle() -> std::io::Result<()> {
        Ok(())
    }

    pub(super) fn set_thread_nice(_: i32) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // reads /proc for the effect; a thread of its own
mod tests {
    /// The calling thread's nice value, from field 19 of `/proc/thread-self/stat`
    /// (the 17th after the parenthesised name).
    #[cfg(target_os = "linux")]
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after_name = stat.rsplit_once(')').unwrap().1;
        after_name
            .split_whitespace()
            .nth(16)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The call changes this thread's nice value only (a fresh thread, so the test
    /// harness's threads keep theirs).
    #[cfg(target_os = "linux")]
    #[test]
    fn lowers_the_calling_thread_only() {
        let before = own_nice();
        std::thread::spawn(|| {
            super::set_thread_nice(7).unwrap();
            assert_eq!(own_nice(), 7);
        })
        .join()
        .unwrap();
        assert_eq!(own_nice(), before);
    }

    /// The calling thread's I/O priority (`ioprio_get`), class in the bits above 13.
    #[cfg(target_os = "linux")]
    fn own_io_class() -> libc::c_long {
        // SAFETY: integer arguments only.
        #[allow(unsafe_code)]
        let v = unsafe {
            libc::syscall(
                libc::SYS_ioprio_get,
                1 as libc::c_long,
                libc::c_long::from(libc::gettid()),
            )
        };
        assert!(v >= 0, "{}", std::io::Error::last_os_error());
        v >> 13
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn io_idle_applies_to_the_calling_thread_only() {
        let before = own_io_class();
        assert_ne!(before, 3);
        std::thread::spawn(|| {
            super::set_thread_io_idle().unwrap();
            assert_eq!(own_io_class(), 3, "IOPRIO_CLASS_IDLE");
        })
        .join()
        .unwrap();
        assert_eq!(own_io_class(), before);
    }
}
