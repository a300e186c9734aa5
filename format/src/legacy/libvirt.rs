//! The header libvirt's libxl driver puts before the libxl stream
//! (`LIBXL_SAVE_MAGIC` in libvirt's `libxl_domain.h`): 16-byte magic
//! `"libvirt-xml\n \0 \r"`, `u32 version`, `u32 xmlLen`, `u32 unused[10]`
//! (64 bytes, host byte order, little-endian on x86), then `xmlLen` bytes
//! of domain XML (NUL included), then what libxl wrote: a legacy libxc
//! stream + `DeviceModelRecord0002` (Xen ≤ 4.5) or a libxl v2 stream.

use std::io::Read;

use crate::bytes::{le, read_full};
use crate::diag::{Context, Error, ErrorKind, Result};
use crate::envelope::LIBVIRT_LIBXL_MAGIC;

/// Largest domain XML accepted (libvirt itself caps XML at 10 MiB).
pub(crate) const MAX_XML_LEN: u32 = 10 << 20;

/// The libvirt libxl driver's save header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtHeader {
    /// `LIBXL_SAVE_VERSION` (1 or 2).
    pub version: u32,
    /// The ten reserved words (version 2 uses the first for compression).
    pub unused: [u32; 10],
    /// The domain XML, trailing NUL included.
    pub xml: Vec<u8>,
}

impl LibvirtHeader {
    /// Size of the fixed part.
    pub(crate) const FIXED_SIZE: usize = 64;

    /// Bytes of the whole header; the libxl stream starts here.
    pub(crate) fn encoded_len(&self) -> u64 {
        Self::FIXED_SIZE as u64 + self.xml.len() as u64
    }

    /// The XML as text (without the NUL), if it is UTF-8.
    pub fn xml_text(&self) -> Option<&str> {
        let x = self.xml.strip_suffix(&[0]).unwrap_or(&self.xml);
        std::str::from_utf8(x).ok()
    }

    /// Read from the start of a file. `total_len` refuses an XML length
    /// past the end before reading.
    pub fn read<R: Read>(r: &mut R, total_len: Option<u64>) -> Result<Self> {
        let ctx = Context::root().field("libvirt header");
        let mut b = [0u8; Self::FIXED_SIZE];
        match read_full(r, &mut b) {
            Ok(got) if got < b.len() => {
                return Err(Error::truncated(got as u64, ctx, (b.len() - got) as u64, 0))
            }
            Ok(_) => {}
            Err(e) => return Err(Error::new(e.got as u64, ctx, ErrorKind::Io(e.error))),
        }
        if &b[..16] != LIBVIRT_LIBXL_MAGIC {
            return Err(Error::invalid(
                0,
                ctx.field("magic"),
                "'libvirt-xml\\n \\0 \\r'",
                crate::envelope::escape_bytes(&b[..16]),
            ));
        }
        // Offsets below are inside the fixed header just read in full.
        let word = |i: usize| le::<u32>(&b, i).unwrap_or_default();
        let version = word(16);
        if !(1..=2).contains(&version) {
            return Err(Error::invalid(
                16,
                ctx.field("version"),
                "1 or 2 (LIBXL_SAVE_VERSION)",
                version.to_string(),
            ));
        }
        let xml_len = word(20);
        let remaining = total_len.map(|t| t.saturating_sub(Self::FIXED_SIZE as u64));
        if xml_len > MAX_XML_LEN || remaining.is_some_and(|rem| u64::from(xml_len) > rem) {
            return Err(Error::new(
                20,
                ctx.field("xmlLen"),
                ErrorKind::Oversized {
                    what: "libvirt domain XML",
                    claimed: xml_len.into(),
                    remaining: remaining.unwrap_or(u64::from(MAX_XML_LEN)),
                },
            ));
        }
        let unused = std::array::from_fn(|i| word(24 + 4 * i));
        let mut xml = Vec::new();
        r.take(u64::from(xml_len))
            .read_to_end(&mut xml)
            .map_err(|e| Error::new(64, ctx.field("xml"), ErrorKind::Io(e)))?;
        if xml.len() as u64 != u64::from(xml_len) {
            return Err(Error::truncated(
                64,
                ctx.field("xml"),
                u64::from(xml_len),
                xml.len() as u64,
            ));
        }
        Ok(LibvirtHeader {
            version,
            unused,
            xml,
        })
    }

    /// Encode the whole header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len() as usize);
        v.extend_from_slice(LIBVIRT_LIBXL_MAGIC);
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(&(self.xml.len() as u32).to_le_bytes());
        for u in self.unused {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v.extend_from_slice(&self.xml);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_lengths() {
        let h = LibvirtHeader {
            version: 2,
            unused: [0; 10],
            xml: b"<domain type='xen'/>\0".to_vec(),
        };
        let bytes = h.to_bytes();
        assert_eq!(bytes.len(), 64 + 21);
        let back = LibvirtHeader::read(&mut &bytes[..], Some(bytes.len() as u64)).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.xml_text(), Some("<domain type='xen'/>"));
        let mut bad = bytes.clone();
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(LibvirtHeader::read(&mut &bad[..], Some(bad.len() as u64)).is_err());
        assert!(LibvirtHeader::read(&mut &bytes[..30], None).is_err());
    }
}
