//! `hvm-guest`: a real HVM guest on KVM whose memory contents at every step are known.
//!
//! The saver uses it as a live source (its RAM is tracked by the hypervisor's dirty log); the
//! restore checker uses it to resume an image in a fresh VM and prove that the guest runs on
//! exactly as an uninterrupted run would.
//!
//! Layers, from the bottom:
//! - [`layout`]: where RAM, page tables, code, mailboxes and the doorbell live in guest-physical
//!   space. Everything the workload does not own sits in a second slot above RAM, so the
//!   workload never dirties it.
//! - [`workload`]: the guest program, x86-64 machine code assembled at run time (iced-x86), and
//!   its pure-Rust reference model [`Workload::expected_after`].
//! - [`dirty`]: one log-dirty interface (`enable`, `peek`, `clean`, `disable`) over the three
//!   KVM mechanisms (classic `KVM_GET_DIRTY_LOG`, manual protect, dirty ring).
//! - [`state`]: vCPU and VM state as raw KVM structs, serializable to bytes.
//! - [`vm`]: the [`Vm`] itself: memory slots, vCPU threads, pause/resume/run-to-step, capture
//!   and [`Vm::from_state`].
//! - [`host`]: what this host's `/dev/kvm` is (hardware KVM or the `kvm_pvm` software
//!   hypervisor) and which capabilities it has.

pub mod dirty;
mod error;
pub mod host;
pub mod layout;
mod pod;
pub mod state;
pub mod vm;
pub mod workload;

pub use dirty::{CleanStats, DirtyBitmap, DirtyMechanism, DirtyMode};
pub use error::{Error, Result};
pub use host::HostInfo;
pub use state::{RestoreOptions, VcpuState, VmState};
pub use vm::{PauseStats, RestoreReport, Vm, VmConfig};
pub use workload::{Expected, Workload, WorkloadRegs};
