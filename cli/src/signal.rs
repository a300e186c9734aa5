//! INT, TERM and HUP: a hangup (the terminal closed, the ssh session
//! dropped) ends a run like an interrupt, never by the default action that
//! would skip the cleanup.
//!
//! Two ways to end: [`cancel_flag`] for a run that winds down itself (a
//! save resumes its guest and removes its temporaries), or
//! [`remove_temporaries_on_signal`] for a run with nothing to undo but its
//! temporaries (a convert): the handler unlinks them and dies of the signal.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The signals that end a run.
pub(crate) const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

const SLOTS: usize = 16;
/// Temporaries the dying handler unlinks (leaked C strings; a slot is
/// cleared, never freed, so the handler never reads freed memory).
static TEMPS: [AtomicPtr<libc::c_char>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];
static FLAG: AtomicBool = AtomicBool::new(false);

/// Remember `path` as a temporary to unlink if a signal kills the run.
pub(crate) fn register_temporary(path: &Path) {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let raw = c.into_raw();
    for slot in &TEMPS {
        if slot
            .compare_exchange(ptr::null_mut(), raw, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
    // More than SLOTS outputs: the next run's stale-temporary sweep covers it.
    // SAFETY: `raw` came from `into_raw` above and was not stored.
    drop(unsafe { CString::from_raw(raw) });
}

/// Forget `path` (it was renamed or removed).
pub(crate) fn unregister_temporary(path: &Path) {
    let want = path.as_os_str().as_bytes();
    for slot in &TEMPS {
        let p = slot.load(Ordering::SeqCst);
        if p.is_null() {
            continue;
        }
        // SAFETY: non-null slots hold leaked, never-freed C strings.
        let s = unsafe { std::ffi::CStr::from_ptr(p) };
        if s.to_bytes() == want {
            let _ = slot.compare_exchange(p, ptr::null_mut(), Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

fn install(handler: extern "C" fn(libc::c_int)) {
    for sig in SIGNALS {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask;
        // the handlers only touch atomics and call async-signal-safe
        // functions (unlink, signal, raise). SA_RESTART as signal(2) had:
        // the bounded writes wait in poll(2), which a signal interrupts
        // anyway, and other blocking calls keep their old behaviour.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, ptr::null_mut());
        }
    }
}

extern "C" fn set_flag(_: libc::c_int) {
    FLAG.store(true, Ordering::SeqCst);
}

extern "C" fn unlink_and_die(sig: libc::c_int) {
    for slot in &TEMPS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: unlink is async-signal-safe; `p` is a leaked C string.
            unsafe {
                libc::unlink(p);
            }
        }
    }
    // SAFETY: both are async-signal-safe; the default action ends the run
    // with the signal's status, as the shell expects.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// INT, TERM and HUP set the returned flag (checked within ~20 ms by a
/// watcher thread, so the flag can be any `Arc` the run already polls).
pub fn cancel_flag() -> Arc<AtomicBool> {
    install(set_flag);
    let shared = Arc::new(AtomicBool::new(false));
    let s = shared.clone();
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            if FLAG.load(Ordering::SeqCst) {
                s.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
    if watcher.is_err() {
        // No thread: die of the signal after removing the temporaries.
        install(unlink_and_die);
    }
    shared
}

/// INT, TERM and HUP remove every temporary of an [`crate::AtomicFile`]
/// still being written, then end the run with the signal.
pub fn remove_temporaries_on_signal() {
    install(unlink_and_die);
}
