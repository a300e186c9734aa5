//! A small tmpfs for tests of a disk that fills up mid-write.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tmpfs of `size` (e.g. `64k`) mounted at `dir/small`, or `None` (said
/// on stderr) where this process may not mount one. Unmount it with
/// [`unmount`] before asserting, so a failed assertion leaves no mount.
pub fn small(dir: &Path, size: &str) -> Option<PathBuf> {
    let mnt = dir.join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs (not root)");
    }
    ok.then_some(mnt)
}

/// Unmounts what [`small`] mounted.
pub fn unmount(mnt: &Path) {
    let _ = Command::new("umount").arg(mnt).status();
}
