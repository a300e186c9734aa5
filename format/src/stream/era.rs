//! The eras of the legacy stream, named. Detecting which one a file is
//! belongs to [`crate::dialect`]; the name lives here, with the stream,
//! because the readers and writers are parameterised by it.

/// The stream layouts Xen used for HVM guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Dialect {
    /// The seed: `e2a44bc7a4` (`28f7888d7f` … `087d43326a`^, Mar 19 – Apr 4
    /// 2007): max_pfn, batches, 0, vCPU records, HVM blob.
    Seed,
    /// `a5af2a08af` … `78938b42ad` (Jan 18 – Mar 8 2007): the HVM context
    /// comes before the vCPU records.
    Jan2007,
    /// `8ae71c0646`, `da12f80b3e` (Mar 8–16 2007): the seed's layout plus a
    /// trailing u32 `shared_info_frame`.
    Mar2007,
    /// `087d43326a` (Apr 4 2007): three u64 magic pfns before the vCPUs.
    Apr2007MagicPfns,
    /// `d5f5ff766f` (Apr 4 2007): as `Apr2007MagicPfns` without max_pfn.
    Apr2007NoMaxPfn,
    /// `538a65bcc3` … `d11bec8a19` (Apr 5–11 2007): a -2 VCPU_INFO chunk and
    /// vCPU contexts without length prefixes.
    Apr2007VcpuMap,
    /// Xen 3.1 – 4.5 (`833623e78a` onward): chunks −2…−20, magic pfns, blob.
    Legacy,
    /// Migration stream v2 (Xen ≥ 4.6).
    V2,
}

impl Dialect {
    /// A one-line description for reports.
    pub fn describe(self) -> &'static str {
        match self {
            Dialect::Seed => "seed (xc_hvm_save e2a44bc7a4, Mar 19 – Apr 4 2007)",
            Dialect::Jan2007 => "unstable Jan–Mar 2007 (HVM context before vCPUs)",
            Dialect::Mar2007 => "unstable Mar 8–16 2007 (trailing shared_info_frame)",
            Dialect::Apr2007MagicPfns => "unstable Apr 4 2007 (087d43326a, magic pfns)",
            Dialect::Apr2007NoMaxPfn => "unstable Apr 4 2007 (d5f5ff766f, no max_pfn)",
            Dialect::Apr2007VcpuMap => "unstable Apr 5–11 2007 (-2 chunk, unprefixed vCPUs)",
            Dialect::Legacy => "Xen 3.1 – 4.5 legacy stream",
            Dialect::V2 => "Xen migration stream v2",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}
