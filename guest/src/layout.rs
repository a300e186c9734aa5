//! Guest-physical layout.
//!
//! ```text
//! 0 .............................. ram_size      RAM, slot 0, dirty-logged; the workload's only target
//! SYS_BASE (4 GiB) ............... +2 MiB        system slot 1: page tables, code, mailboxes (not logged)
//! DOORBELL_BASE (4 GiB + 2 MiB) .. +8 per vCPU   no slot: a write here is an MMIO exit ("reached target")
//! ```
//!
//! The system slot sits above the largest RAM we allow so that RAM can grow to 4 GiB without
//! moving it. It is rebuilt, not saved: the workload keeps all of its state in registers and RAM,
//! so a restored VM needs only RAM and vCPU state.

/// Bytes per guest page; dirty bitmaps have one bit per page.
pub const PAGE_SIZE: u64 = 4096;
/// Largest RAM slot.
pub(crate) const MAX_RAM: u64 = 4 << 30;
/// Default RAM size.
pub(crate) const DEFAULT_RAM: u64 = 512 << 20;
/// Guest-physical base of the system slot.
pub(crate) const SYS_BASE: u64 = 4 << 30;
/// Size of the system slot (one 2 MiB page of the identity map).
pub(crate) const SYS_SIZE: u64 = 2 << 20;
/// Offset of the PML4 in the system slot; the PDPT and five page directories follow it.
pub(crate) const PML4_OFFSET: u64 = 0;
/// Offset of the page-directory-pointer table.
pub(crate) const PDPT_OFFSET: u64 = 0x1000;
/// Offset of the first of five page directories (0..5 GiB, 2 MiB pages).
pub(crate) const PD_OFFSET: u64 = 0x2000;
/// Number of page directories: 5 GiB mapped, covering RAM, the system slot and the doorbell.
pub(crate) const PD_COUNT: u64 = 5;
/// Offset of the workload's code.
pub(crate) const CODE_OFFSET: u64 = 0x8000;
/// Offset of vCPU 0's mailbox page; vCPU i's is at `MAILBOX_OFFSET + i * PAGE_SIZE`.
pub(crate) const MAILBOX_OFFSET: u64 = 0x10000;
/// Mailbox word written by the host: the step at which the workload stops.
pub(crate) const MAILBOX_TARGET: u64 = 0;
/// Mailbox word written by the guest after every step: the step counter.
pub(crate) const MAILBOX_PROGRESS: u64 = 8;
/// Guest-physical address of vCPU 0's doorbell; vCPU i's is at `DOORBELL_BASE + 8 * i`.
pub(crate) const DOORBELL_BASE: u64 = SYS_BASE + SYS_SIZE;
/// Most vCPUs a VM may have.
pub const MAX_VCPUS: usize = 2;

/// Guest-physical address of vCPU `i`'s mailbox.
pub fn mailbox_gpa(vcpu: usize) -> u64 {
    SYS_BASE + MAILBOX_OFFSET + vcpu as u64 * PAGE_SIZE
}

/// Guest-physical address of vCPU `i`'s doorbell.
pub fn doorbell_gpa(vcpu: usize) -> u64 {
    DOORBELL_BASE + 8 * vcpu as u64
}
