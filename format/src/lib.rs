//! # hvm-format
//!
//! Read, write and check Xen HVM guest save images, starting from the stream
//! that `xc_hvm_save` (Xen commit `e2a44bc7a4`, April 2007) wrote, through
//! every later legacy dialect to migration stream v2.
//!
//! ```
//! use hvm_format::hvm::{seed_reset_blob, CpuSeed};
//! use hvm_format::image::{open_slice, slice_tail, OpenOptions, Tail};
//! use hvm_format::stream::{Dialect, Item, Writer};
//! use hvm_format::vcpu::{VcpuContext, VcpuRegisters};
//! use hvm_format::{PfnEntry, WordSize, PAGE_SIZE};
//!
//! // A tiny image, as a 64-bit xend toolstack of April 2007 wrote it: two
//! // pages, one vCPU, the HVM context of a guest at power-on.
//! let pages = [vec![0xAA; PAGE_SIZE], vec![0x55; PAGE_SIZE]];
//! let vcpu = VcpuContext::from_registers(WordSize::W64, &VcpuRegisters::default())?;
//! let mut w = Writer::new(Vec::new(), WordSize::W64);
//! w.max_pfn(1)?;
//! w.batch(&[PfnEntry::page(0), PfnEntry::page(1)], &[&pages[0], &pages[1]])?;
//! w.end()?;
//! w.vcpu_count(1)?;
//! w.vcpu(vcpu.as_bytes())?;
//! w.hvm_blob(&seed_reset_blob(0x6FB, &[CpuSeed::power_on()]))?;
//! let image = w.finish()?;
//!
//! // Open it as a user would a file mapped into memory: the envelope and
//! // the dialect are detected, with the evidence.
//! let (info, mut reader) = open_slice(&image, OpenOptions::default())?;
//! assert_eq!(info.detection.dialect, Dialect::Seed);
//! assert_eq!(info.word(), WordSize::W64);
//! let mut pages_seen = 0;
//! while let Some(item) = reader.next()? {
//!     if let Item::Batch(b) = item {
//!         pages_seen += b.page_count();
//!     }
//! }
//! assert_eq!(pages_seen, 2);
//! assert!(matches!(slice_tail(&info, &reader)?, Tail::None));
//! # Ok::<(), hvm_format::Error>(())
//! ```
//!
//! ## Layers
//!
//! Modules depend only downward (`tests/layers.rs` checks it):
//!
//! 1. **diag**: [`diag`] (the [`Error`] with byte offset, context path and
//!    expected/found; the [`diag::Finding`]s checks report) and the private
//!    byte reader every decoder uses, with [`read_full`], the one read loop.
//! 2. **codec**: each encoding with its reader and writer side by side:
//!    [`envelope`] (xend, xl, libvirt wrappers, QEVM tail), [`stream`] (the
//!    legacy libxc stream: pull [`stream::Reader`] over any `Read`,
//!    zero-copy [`stream::SliceReader`], [`stream::Writer`]), [`legacy`]
//!    (the later legacy dialects), [`vcpu`] (`vcpu_guest_context` of 64- and
//!    32-bit toolstacks), [`hvm`] (the HVM context records of both eras),
//!    [`v2`] (migration stream v2), and the shared [`pfn`], [`layout`] and
//!    [`fields`].
//! 3. **analysis**: [`dialect`] (which Xen era wrote a stream, with the
//!    evidence), [`image`] (envelope + dialect + reader in one call),
//!    [`rules`] (what a restore would reject), [`index`] (where each page's
//!    final copy lives), [`digest`] (the one definition of the guest's
//!    memory digest), [`manifest`] (the saver's record of it) and
//!    [`mapped`] (image maps guarded against the file shrinking).
//!
//! ## Entry points
//!
//! * Reading an image: [`image::open_slice`] (a file in memory) or
//!   [`image::open_read`] / [`image::open_any_read`] (any `Read`, v2
//!   included), then pull items and ask for the [`image::Tail`].
//! * Checking it: [`rules::StreamChecker`] fed the same items.
//! * Writing one: [`stream::Writer`], [`v2::Writer`].
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
