//! The crate's error type: which KVM operation failed, or which wait timed out.

use std::time::Duration;

/// Errors of the guest: KVM ioctls, memory mappings, run control and state decoding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// The ioctl, e.g. "KVM_SET_SREGS".
        op: &'static str,
        /// The errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
    /// A host system call (mmap, signal, thread) failed.
    #[error("{op} failed: {source}")]
    Os {
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot be honoured (too much RAM, too many vCPUs, missing capability).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A wait exceeded its limit.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A vCPU stopped for a reason other than the workload's doorbell.
    #[error("vCPU {vcpu} failed: {reason}")]
    VcpuFailed {
        /// The vCPU index.
        vcpu: usize,
        /// The exit or error that stopped it.
        reason: String,
    },
    /// The guest program could not be assembled.
    #[error("assembling the workload failed: {0}")]
    Asm(String),
    /// Serialized state is malformed.
    #[error("state bytes at offset {offset} ({context}): expected {expected}, found {found}")]
    State {
        /// Byte offset in the serialized state.
        offset: usize,
        /// Which section or field.
        context: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// The operation needs the vCPUs paused (or running) and they are not.
    #[error("wrong run state: {0}")]
    RunState(String),
}

impl Error {
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }

    pub(crate) fn os(op: &'static str) -> Error {
        Error::Os {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
