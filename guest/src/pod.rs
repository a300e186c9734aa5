//! Byte views of KVM's plain-old-data structs, for serializing state.
//!
//! Loading zero-pads or truncates to the current struct size, as kvm-bindings' own serializer
//! does, so state written by a build with a longer or shorter struct still loads.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state,
    kvm_mp_state, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs,
};

/// A `#[repr(C)]` struct made only of integers (and unions of integers), for which every bit
/// pattern is valid.
///
/// # Safety
/// Implement only for such types.
pub(crate) unsafe trait Pod: Copy {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self: Pod` is plain integers without invalid bit patterns; the slice covers
        // exactly the object and lives as long as the borrow.
        unsafe {
            std::slice::from_raw_parts(
                self as *const Self as *const u8,
                std::mem::size_of::<Self>(),
            )
        }
    }

    /// Builds a value from bytes, zero-padding short input and ignoring excess.
    fn from_bytes_lenient(bytes: &[u8]) -> Self {
        // SAFETY: all-zero is a valid `Pod` value.
        let mut v: Self = unsafe { std::mem::zeroed() };
        let n = bytes.len().min(std::mem::size_of::<Self>());
        // SAFETY: `n` is within both the source slice and the destination object, which do not
        // overlap; any bytes form a valid `Pod`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), &mut v as *mut Self as *mut u8, n);
        }
        v
    }
}

// SAFETY (all impls below): these kvm-bindings structs are `#[repr(C)]` aggregates of integer
// fields, integer arrays and unions of those; no pointers, bools or enums.
unsafe impl Pod for kvm_regs {}
unsafe impl Pod for kvm_sregs {}
unsafe impl Pod for kvm_fpu {}
unsafe impl Pod for kvm_xcrs {}
unsafe impl Pod for kvm_debugregs {}
unsafe impl Pod for kvm_lapic_state {}
unsafe impl Pod for kvm_mp_state {}
unsafe impl Pod for kvm_vcpu_events {}
unsafe impl Pod for kvm_cpuid_entry2 {}
unsafe impl Pod for kvm_irqchip {}
unsafe impl Pod for kvm_pit_state2 {}
unsafe impl Pod for kvm_clock_data {}
