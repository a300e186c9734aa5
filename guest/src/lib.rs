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

//! ## Measured on the project's machines (kvm_pvm, 2 cores shared, debug build of the tests)
//! - All three dirty-log mechanisms work on kvm_pvm: classic, manual protect (INITIALLY_SET)
//!   and the dirty ring (acquire/release variant, ring-full exits handled). Each reports
//!   exactly the model's write set of a window, also when harvested live.
//! - Workload: 1.2–3.3 × 10⁸ steps/s with one write per step in a warm working set (native CPL 3);
//!   ~2 × 10⁶ steps/s with `spin = 1000`.
//! - Pause (kick out of KVM_RUN until parked): median 50–120 µs for 1–2 vCPUs, tail up to
//!   ~25 ms when other processes load both cores.
//! - Log-dirty host cost, 128 MiB slot fully dirty: classic clean ≈ 15–30 µs, manual-protect
//!   peek ≈ 35–50 µs and clean ≈ 0.2–0.45 ms (the CLEAR re-protect), ring clean ≈ 15–30 µs
//!   after a live peek harvested 32 768 entries in ≈ 1.6–3.2 ms. Guest cost of re-dirtying a
//!   write-protected page: ≈ 26–44 µs on kvm_pvm under load (far above the 2.5 µs quoted for
//!   an idle machine), the same for every mechanism.
//! - Restore of a 128 MiB, 2-vCPU guest (5 500 non-zero pages): 160–230 ms, almost all memory
//!   copy in an unoptimized build.

#![warn(missing_docs)]
pub mod dirty;
mod error;
pub mod host;
pub mod layout;
mod pod;
pub mod state;
pub mod vm;
pub mod workload;

pub use dirty::{CleanStats, DirtyBitmap, DirtyLog, DirtyMechanism, DirtyMode};
pub use error::{Error, Result};
pub use host::HostInfo;
pub use state::{RestoreOptions, VcpuState, VmState};
pub use vm::{PauseStats, RestoreReport, Vm, VmConfig};
pub use workload::{Expected, Workload, WorkloadRegs};
