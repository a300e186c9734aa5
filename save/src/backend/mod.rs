//! Implementations of [`Domain`](crate::domain::Domain).
//!
//! * [`sim`]: the deterministic simulated guest (always built).
//! * [`fault`]: a wrapper that fails a chosen call, for fault-injection tests.
//! * `kvm` (Linux): the embedded real guest through `hvm-guest`.
//! * [`xen`]: a real Xen domain through `xenctrl` (feature `xen`); without
//!   the feature it says how to build it, never pretends.
//!
//! [`unavailable`] names a backend a build lacks.

pub mod fault;
#[cfg(target_os = "linux")]
pub mod kvm;
/// The device model over QMP (used by the Xen backend; built always so its
/// protocol is tested without Xen).
pub mod qmp;
pub mod sim;
/// Xen through `xenctrl` (feature `xen`; its pure mappings always build).
pub mod xen;

use crate::domain::DomainError;

/// The error for a backend this build does not have.
pub fn unavailable(backend: &str) -> DomainError {
    DomainError::Unavailable(format!(
        "the {backend} backend is not part of this build of hvm-save \
         (--sim is always available)"
    ))
}
