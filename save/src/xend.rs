//! What `--envelope xend` puts around the stream, as `XendCheckpoint.py` @
//! `e2a44bc7a4` did (format-notes §4): `LinuxGuestRecord`, a big-endian
//! config length, the SXP config on one line; after the stream
//! `QemuDeviceModelRecord` and the device model's QEVM file to EOF.
//!
//! Only the writing side the saver needs lives here; parsing belongs to
//! `hvm_format::envelope`.

use std::io::{self, Write};

/// The 16-byte signature xend writes first (also for HVM guests).
pub const SIGNATURE: &[u8; 16] = b"LinuxGuestRecord";
/// The 21-byte signature before the device-model state.
pub const QEMU_SIGNATURE: &[u8; 21] = b"QemuDeviceModelRecord";
/// `QEVM` magic of qemu-dm's savevm file.
pub const QEVM_MAGIC: u32 = 0x5145_564D;
/// qemu-dm's savevm file version of that era.
pub const QEVM_VERSION: u32 = 1;

/// What the config describes: the domain as xend's `dominfo.sxpr()` would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Domain id.
    pub domid: u32,
    /// Domain name (a bare SXP atom: letters, digits, `-_.`).
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
    /// `sxp.to_string` wrote it. Names that are not bare atoms are quoted
    /// as Python's `repr` would.
    pub fn to_sxp(&self) -> String {
        let bare = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        let name = if bare {
            self.name.clone()
        } else {
            let escaped: String = self
                .name
                .chars()
                .flat_map(|c| match c {
                    '\'' | '\\' => vec!['\\', c],
                    c if c.is_ascii_graphic() || c == ' ' => vec![c],
                    _ => format!("\\x{:02x}", c as u32 & 0xFF).chars().collect(),
                })
                .collect();
            format!("'{escaped}'")
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
pub fn write_header<W: Write>(out: &mut W, config: &GuestConfig) -> io::Result<()> {
    let text = config.to_sxp();
    let len = i32::try_from(text.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "config too long"))?;
    let mut head = Vec::with_capacity(20 + text.len());
    head.extend_from_slice(SIGNATURE);
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(text.as_bytes());
    out.write_all(&head)
}

/// An empty QEVM file: magic and version, no sections (what a device model
/// with nothing to save would write).
pub fn empty_qevm() -> Vec<u8> {
    let mut v = Vec::with_capacity(8);
    v.extend_from_slice(&QEVM_MAGIC.to_be_bytes());
    v.extend_from_slice(&QEVM_VERSION.to_be_bytes());
    v
}

/// Write the tail that follows the libxc stream.
pub fn write_tail<W: Write>(out: &mut W, qevm: Option<&[u8]>) -> io::Result<()> {
    out.write_all(QEMU_SIGNATURE)?;
    match qevm {
        Some(q) => out.write_all(q),
        None => out.write_all(&empty_qevm()),
    }
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
        assert!(c.to_sxp().contains("(name 'it\\'s a vm')"));
    }
}
