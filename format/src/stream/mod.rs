//! The legacy libxc stream of the seed (`xc_hvm_save` @ `e2a44bc7a4`).
//!
//! ```text
//! ulong max_pfn                      inclusive highest pfn (not a count)
//! { i32 count (1..=1024)             a batch
//!   ulong pfn[count]                 type nibble in bits 28–31
//!   4096 bytes per pfn without type bits }*
//! [ i32 -1  { batch }* ]             verify marker, then a full resend
//! i32 0                              terminator
//! u32 nr_vcpus
//! { u32 size (5168 | 2800), size bytes }× nr_vcpus
//! u32 hvm_len, hvm_len bytes         the HVM context blob
//! ```
//!
//! "ulong" is the toolstack's word (8 or 4 bytes, [`WordSize`]); everything
//! is little-endian and unaligned. There is no magic, no version and no
//! overall length: the grammar is the only framing.
//!
//! Two readers share one grammar (the `grammar` module): [`Reader`] pulls from any
//! `Read` (pipes, sockets) holding at most one item in a reused buffer, and
//! [`SliceReader`] walks a byte slice (an mmap'd file) and lends items that
//! borrow from it without copying. [`Writer`] mirrors them and refuses items
//! the grammar does not allow at that point.

mod era;
mod grammar;

/// `DeviceModelRecord0002`: the signature before a device model state that
/// follows a 3.x–4.5 stream (and Xen's converted libxc v2 output).
pub use grammar::DM_RECORD_0002;
mod item;
mod reader;
mod writer;

pub use era::Dialect;
pub use grammar::{ChunkSet, Layout};
pub use item::{
    chunk_hvm_param, chunk_name, Batch, Chunk, DeviceModel, Element, HvmBlob, Item, MagicPfns,
    VcpuRecord,
};
pub use reader::{Reader, SliceReader};
pub use writer::Writer;

use crate::pfn::WordSize;

/// `sizeof(vcpu_guest_context_t)` for a toolstack of this word size: the
/// only record size the seed restorer accepts.
pub const fn vcpu_context_size(word: WordSize) -> u32 {
    match word {
        WordSize::W64 => 5168,
        WordSize::W32 => 2800,
    }
}

/// Chunk value that switches the restorer into verify mode.
pub const VERIFY_MARKER: i32 = -1;
