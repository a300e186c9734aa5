//! What `--envelope xend` puts around the stream, as `XendCheckpoint.py` @
//! `e2a44bc7a4` did (docs/format.md §4): `LinuxGuestRecord`, a big-endian
//! config length, the SXP config on one line; after the stream
//! `QemuDeviceModelRecord` and the device model's QEVM file to EOF.
//!
//! The bytes are written by [`hvm_format::envelope`]; this module only
//! describes the domain as xend's config did.

use std::io::Write;

use hvm_format::envelope::qevm::empty_qevm;
use hvm_format::envelope::sxp::{is_bare_atom, python_repr};
use hvm_format::envelope::{write_qemu_tail, write_xend_header};

/// `QEVM` magic of qemu-dm's savevm file.
pub const QEVM_MAGIC: u32 = 0x5145_564D;
/// qemu-dm's savevm file version of that era.
pub const QEVM_VERSION: u32 = 1;

/// What the config describes: the domain as xend's `dominfo.sxpr()` would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Domain id.
    pub domid: u32,
    /// Domain name.
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Standard VGA rather than Cirrus.
    pub stdvga: bool,
}

impl GuestConfig {
    /// The config as one SXP line (no newline, no NUL), as
    /// `sxp.to_string` wrote it: bare atoms where xend allowed them, Python
    /// `repr` otherwise.
    pub fn to_sxp(&self) -> String {
        let name = if is_bare_atom(self.name.as_bytes()) {
            self.name.clone()
        } else {
            python_repr(self.name.as_bytes())
        };
        format!(
            "(domain (domid {}) (name {}) (memory {}) (maxmem {}) (vcpus {}) \
             (image (hvm (kernel /usr/lib/xen/boot/hvmloader) (vcpus {}) (stdvga {}) \
             (device_model /usr/lib/xen/bin/qemu-dm))))",
            self.domid,
            name,
            self.memory_mib,
            self.memory_mib,
            self.vcpus,
            self.vcpus,
            u8::from(self.stdvga)
        )
    }
}

/// Write the header that precedes the libxc stream.
pub fn write_header<W: Write>(out: &mut W, config: &GuestConfig) -> hvm_format::Result<()> {
    write_xend_header(out, config.to_sxp().as_bytes()).map(|_| ())
}

/// Write the tail that follows the libxc stream: the device model's QEVM
/// file, or an empty one (magic and version, no sections).
pub fn write_tail<W: Write>(out: &mut W, qevm: Option<&[u8]>) -> hvm_format::Result<()> {
    match qevm {
        Some(q) => write_qemu_tail(out, q),
        None => write_qemu_tail(out, &empty_qevm()),
    }
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_tail_bytes() {
        let c = GuestConfig {
            domid: 3,
            name: "sim".into(),
            memory_mib: 512,
            vcpus: 2,
            stdvga: false,
        };
        let mut v = Vec::new();
        write_header(&mut v, &c).unwrap();
        assert_eq!(&v[..16], b"LinuxGuestRecord");
        let len = u32::from_be_bytes([v[16], v[17], v[18], v[19]]) as usize;
        assert_eq!(len, v.len() - 20);
        let text = std::str::from_utf8(&v[20..]).unwrap();
        assert!(text.starts_with("(domain (domid 3) (name sim) (memory 512)"));
        assert!(!text.contains('\n'));
        let mut t = Vec::new();
        write_tail(&mut t, None).unwrap();
        assert_eq!(&t[..21], b"QemuDeviceModelRecord");
        assert_eq!(&t[21..], &[0x51, 0x45, 0x56, 0x4D, 0, 0, 0, 1]);
    }

    #[test]
    fn odd_names_are_quoted() {
        let c = GuestConfig {
            domid: 1,
            name: "it's a vm".into(),
            memory_mib: 1,
            vcpus: 1,
            stdvga: true,
        };
        assert!(
            c.to_sxp().contains("(name \"it's a vm\")"),
            "{}",
            c.to_sxp()
        );
    }
}
