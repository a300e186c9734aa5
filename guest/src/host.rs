//! What `/dev/kvm` is on this host, and which of the capabilities we use it offers.

use kvm_bindings::{
    KVM_CAP_ADJUST_CLOCK, KVM_CAP_DIRTY_LOG_RING, KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
    KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_IRQCHIP, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, KVM_CAP_NR_VCPUS,
    KVM_CAP_PIT2, KVM_CAP_TSC_CONTROL, KVM_CAP_XCRS, KVM_CAP_XSAVE, KVM_CAP_XSAVE2,
};
use kvm_ioctls::Kvm;

/// Path of the KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// The host's KVM: kind and capability values (KVM_CHECK_EXTENSION results).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// `/sys/module/kvm_pvm` exists: KVM is the software PVM hypervisor, not VMX/SVM. Only
    /// 64-bit CPL-3 code runs natively there; everything else is emulated.
    pub kvm_pvm: bool,
    /// KVM_GET_API_VERSION.
    pub api_version: i32,
    /// KVM_CAP_IRQCHIP: in-kernel PIC/IOAPIC/LAPIC, whose state a resume must carry.
    pub irqchip: bool,
    /// KVM_CAP_PIT2: the in-kernel PIT and its saved state.
    pub pit2: bool,
    /// KVM_CAP_IMMEDIATE_EXIT: how a pause kicks a vCPU out of KVM_RUN without a race.
    pub immediate_exit: bool,
    /// KVM_CAP_XSAVE: the FPU state is captured as an xsave area.
    pub xsave: bool,
    /// Size of the xsave area in bytes (0 = KVM_CAP_XSAVE2 absent: 4096).
    pub xsave2_size: i32,
    /// KVM_CAP_XCRS: XCR0 can be read and restored.
    pub xcrs: bool,
    /// KVM_CAP_ADJUST_CLOCK flags: kvmclock can be captured and set.
    pub adjust_clock: i32,
    /// KVM_CAP_TSC_CONTROL: the guest TSC frequency can be set.
    pub tsc_control: bool,
    /// Bits of KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (1 = enable, 2 = initially set).
    pub manual_dirty_log_protect: i32,
    /// Largest dirty ring in bytes (0 = none).
    pub dirty_ring_bytes: i32,
    /// Largest acquire/release dirty ring in bytes (0 = none).
    pub dirty_ring_acq_rel_bytes: i32,
    /// KVM_CAP_NR_VCPUS: the recommended vCPU count.
    pub nr_vcpus: i32,
}

impl HostInfo {
    /// Whether `/dev/kvm` can be opened here.
    pub fn kvm_available() -> bool {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(KVM_DEVICE)
            .is_ok()
    }

    /// Whether KVM is the kvm_pvm software hypervisor.
    pub fn is_kvm_pvm() -> bool {
        std::path::Path::new("/sys/module/kvm_pvm").exists()
    }

    /// Opens /dev/kvm and probes it.
    pub fn probe_default() -> crate::Result<HostInfo> {
        let kvm = Kvm::new().map_err(crate::Error::kvm("open /dev/kvm"))?;
        Ok(Self::probe(&kvm))
    }

    /// Probes an open KVM handle.
    pub fn probe(kvm: &Kvm) -> HostInfo {
        let c = |cap: u32| kvm.check_extension_raw(cap as libc::c_ulong);
        HostInfo {
            kvm_pvm: Self::is_kvm_pvm(),
            api_version: kvm.get_api_version(),
            irqchip: c(KVM_CAP_IRQCHIP) > 0,
            pit2: c(KVM_CAP_PIT2) > 0,
            immediate_exit: c(KVM_CAP_IMMEDIATE_EXIT) > 0,
            xsave: c(KVM_CAP_XSAVE) > 0,
            xsave2_size: c(KVM_CAP_XSAVE2),
            xcrs: c(KVM_CAP_XCRS) > 0,
            adjust_clock: c(KVM_CAP_ADJUST_CLOCK),
            tsc_control: c(KVM_CAP_TSC_CONTROL) > 0,
            manual_dirty_log_protect: c(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
            dirty_ring_bytes: c(KVM_CAP_DIRTY_LOG_RING),
            dirty_ring_acq_rel_bytes: c(KVM_CAP_DIRTY_LOG_RING_ACQ_REL),
            nr_vcpus: c(KVM_CAP_NR_VCPUS),
        }
    }

    /// A one-line description for test output and logs.
    pub fn describe(&self) -> String {
        format!(
            "{} (api {}, irqchip {}, manual-protect {}, ring {} B, ring-acq-rel {} B, xsave2 {} B, tsc-control {})",
            if self.kvm_pvm {
                "kvm_pvm software hypervisor (no VMX/SVM)"
            } else {
                "hardware KVM"
            },
            self.api_version,
            self.irqchip,
            self.manual_dirty_log_protect,
            self.dirty_ring_bytes,
            self.dirty_ring_acq_rel_bytes,
            self.xsave2_size,
            self.tsc_control
        )
    }
}
