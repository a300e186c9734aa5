//! What `convert` writes and reports: the target framing, the report, and
//! the small pieces both the legacy converter ([`crate::convert`]) and the
//! v2 re-framer (`crate::reframe`) build their output from. They sit below
//! both, so that neither of the two imports the other's internals.

use std::path::Path;

use hvm_format::dialect::Dialect;
use hvm_format::v2::libxl::EmulatorId;
use serde::Serialize;

/// Which v2 framing to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Target {
    /// A bare libxc image (what `xc_domain_restore` reads).
    Libxc,
    /// libxl's stream: the libxc image plus the emulator record.
    Libxl,
    /// An `xl save` file: xl header, then the libxl stream.
    Xl,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "libxc" => Ok(Target::Libxc),
            "libxl" => Ok(Target::Libxl),
            "xl" => Ok(Target::Xl),
            _ => Err(format!("expected libxc, libxl or xl, found {s}")),
        }
    }
}

/// What `convert` did.
#[derive(Debug, Clone, Serialize)]
pub struct ConvertReport {
    /// Input as named.
    pub input: String,
    /// Output path.
    pub output: String,
    /// Output framing.
    pub target: Target,
    /// The input's dialect.
    pub dialect: Dialect,
    /// The input's toolstack word size.
    pub word_bits: u32,
    /// PAGE_DATA records written.
    pub page_records: u64,
    /// Pages written (verify resend included).
    pub pages: u64,
    /// Pages of the verify resend (after a VERIFY record).
    pub verify_pages: u64,
    /// XTAB entries dropped (pfns the saver could not map: no data).
    pub xtab_dropped: u64,
    /// The HVM_PARAMS written, `(index, value)`.
    pub hvm_params: Vec<(u64, u64)>,
    /// Every translation made, one line each.
    pub translations: Vec<String>,
    /// Bytes written.
    pub bytes_written: u64,
}

impl ConvertReport {
    /// A report with nothing done yet.
    pub(crate) fn new(
        input: &str,
        out: &Path,
        target: Target,
        dialect: Dialect,
        word_bits: u32,
    ) -> Self {
        ConvertReport {
            input: input.to_string(),
            output: out.display().to_string(),
            target,
            dialect,
            word_bits,
            page_records: 0,
            pages: 0,
            verify_pages: 0,
            xtab_dropped: 0,
            hvm_params: Vec::new(),
            translations: Vec::new(),
            bytes_written: 0,
        }
    }
}

/// The emulator a device model state belongs to, from its magic.
pub(crate) fn emulator_id(state: &[u8]) -> EmulatorId {
    if state.starts_with(b"QEVM") {
        EmulatorId::QemuTraditional
    } else {
        EmulatorId::Unknown
    }
}

/// A minimal xl JSON config for an HVM domain `name` of `mem_mib` MiB.
pub(crate) fn xl_config_json(name: &str, mem_mib: u64) -> String {
    serde_json::json!({
        "c_info": { "type": "hvm", "name": name },
        "b_info": {
            "max_memkb": mem_mib * 1024,
            "target_memkb": mem_mib * 1024,
            "type.hvm": {},
        },
    })
    .to_string()
}
