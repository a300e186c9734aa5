//! # hvm-format
//!
//! Read, write and check Xen HVM guest save images, starting from the stream
//! that `xc_hvm_save` (Xen commit `e2a44bc7a4`, April 2007) wrote.
//!
//! The API in layers, outermost first:
//!
//! * [`envelope`]: what wraps the libxc stream in a file (bare, xend's
//!   `LinuxGuestRecord` … `QemuDeviceModelRecord` + QEVM tail).
//! * [`dialect`]: which Xen era wrote the stream and the toolstack word size,
//!   with the evidence.
//! * [`stream`]: the legacy libxc stream itself: a pull [`stream::Reader`]
//!   over any `Read`, a zero-copy [`stream::SliceReader`] for mmap'd files,
//!   and a [`stream::Writer`] that refuses items out of order.
//! * [`vcpu`]: `vcpu_guest_context` of 64-bit (5168 bytes) and 32-bit
//!   (2800 bytes) toolstacks.
//! * [`hvm`]: the HVM context blob: descriptors and typed records of the 2007
//!   era and of current Xen.
//! * [`digest`]: the one definition of "the guest's memory digest" shared by
//!   the saver's manifest, the inspector and the restore checker.
//! * [`error`]: one error type with byte offset, context path and
//!   expected/found.
//!
//! Everything is little-endian except the xend config length and the QEVM
//! file, which are big-endian, exactly as Xen wrote them.

#![warn(missing_docs)]

mod bytes;
pub mod diag;
pub mod dialect;
pub mod digest;
pub mod envelope;
pub mod error;
pub mod fields;
pub mod hvm;
pub mod image;
pub mod index;
pub mod layout;
pub mod legacy;
pub mod manifest;
pub mod mapped;
pub mod pfn;
pub mod rules;
pub mod stream;
pub mod v2;
pub mod vcpu;

pub use bytes::{read_full, ReadFullError};
pub use diag::{Context, Error, ErrorKind, Result};
pub use pfn::{Pfn, PfnEntry, PfnType, WordSize, MAX_BATCH, PAGE_SIZE};
