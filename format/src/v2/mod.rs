//! Xen migration stream v2: the libxc image, libxl framing and the xl file.
//!
//! This is what every Xen since 4.6 writes, and what a 2007 image must be
//! converted into for a current Xen to restore it (docs/format.md §8).
//!
//! ```text
//! xl file    "Xen saved domain, xl format\n \0 \r" | byteorder | mandatory | optional
//!            | optional_data_len | (u32 config_len + JSON config\0) | libxl image
//! libxl      "LibxlFmt" v2 options (16 bytes, big-endian)
//!            | records … LIBXC_CONTEXT → libxc image up to its END … | END
//! libxc      image header (24 bytes, big-endian: marker, "XENF", version, options)
//!            | domain header (16 bytes) | records … | END
//! record     u32 type | u32 body_length | body | zero padding to a multiple of 8
//! ```
//!
//! Layers:
//!
//! * [`libxc`]: headers and typed record bodies ([`RecordBody`]), unknown types
//!   kept raw.
//! * [`reader`]: a pull [`Reader`] over any `Read` (pipes; one reused body
//!   buffer) and a zero-copy [`SliceReader`] over `&[u8]`. Both yield
//!   [`RawRecord`]s carrying their file offset, parsed on demand.
//! * [`writer`]: [`Writer`] emits records with correct padding and refuses an
//!   order the spec forbids; PAGE_DATA goes out in one vectored write.
//! * [`validate`]: the checks of Xen's `verify-stream-v2` as
//!   [`Finding`](crate::rules::Finding)s.
//! * [`libxl`] and [`xl`]: the framings around the libxc image.
//!
//! Only little-endian (x86) streams are read and written, as Xen's own
//! verifier does.

pub mod libxc;
pub mod libxl;
pub mod reader;
pub mod validate;
pub mod writer;
pub mod xl;

pub use libxc::{
    CpuidLeaf, DomainHeader, DomainType, HvmParam, HvmParams, ImageHeader, MsrEntry, P2mFrames,
    PageData, PageDataEntry, PvVcpu, RecordBody, RecordType, TscInfo, X86PvInfo,
};
pub use libxl::{
    EmulatorId, LibxlHeader, LibxlItem, LibxlReader, LibxlRecord, LibxlRecordType, LibxlWriter,
};
pub use reader::{AfterEnd, RawRecord, Reader, Record, SliceReader, DEFAULT_MAX_BODY_LEN};
pub use validate::{
    check_libxc, check_libxl, check_xl, validate_libxc, validate_libxl, validate_xl,
};
pub use writer::Writer;
pub use xl::XlHeader;

/// Every record is padded with zero bytes to this alignment.
pub(crate) const RECORD_ALIGN: u64 = 8;

/// Bytes of zero padding after a body of `len` bytes.
pub(crate) const fn padding_len(len: u64) -> u64 {
    (RECORD_ALIGN - len % RECORD_ALIGN) % RECORD_ALIGN
}
