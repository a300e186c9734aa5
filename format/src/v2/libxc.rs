//! The libxc image of migration v2: image header, domain header and the
//! typed bodies of every record of `libxc-migration-stream.pandoc` rev. 3.
//!
//! Typed bodies keep reserved fields as found so that write → read → write
//! is byte-exact even for odd streams; [`super::validate`] judges them.

use std::borrow::Cow;
use std::fmt;

use binrw::{BinRead, BinWrite, Endian};

use crate::bytes::{self, le};
use crate::diag::{slice_at, Context, Error, ErrorKind, Result};
use crate::pfn::{Pfn, PfnEntry, PfnType, LTAB_MASK, PAGE_SIZE};

/// Decode a fixed-layout struct whose length the caller already checked.
fn decode<T>(bytes: &[u8], big: bool, offset: u64, ctx: &Context) -> Result<T>
where
    T: for<'a> BinRead<Args<'a> = ()>,
{
    bytes::decode(bytes, endian(big))
        .map(|(v, _)| v)
        .map_err(|e| Error::invalid(offset, ctx.clone(), "a decodable structure", e.to_string()))
}

fn endian(big: bool) -> Endian {
    if big {
        Endian::Big
    } else {
        Endian::Little
    }
}

/// Decode a fixed-size header of `size` bytes at the start of `bytes`; a
/// short input is a truncation of `what`.
fn decode_fixed<T>(
    bytes: &[u8],
    size: usize,
    big: bool,
    offset: u64,
    what: &'static str,
) -> Result<T>
where
    T: for<'a> BinRead<Args<'a> = ()>,
{
    let ctx = Context::root().field(what);
    match bytes.get(..size) {
        Some(b) => decode(b, big, offset, &ctx),
        None => Err(Error::truncated(
            offset,
            ctx,
            size as u64,
            bytes.len() as u64,
        )),
    }
}

/// Encode a fixed-size header into its `N` bytes.
fn encode_fixed<T, const N: usize>(v: &T, big: bool) -> [u8; N]
where
    T: for<'a> BinWrite<Args<'a> = ()>,
{
    let mut out = Vec::with_capacity(N);
    encode(v, big, &mut out);
    let mut a = [0u8; N];
    a.copy_from_slice(&out);
    a
}

fn encode<T>(v: &T, big: bool, out: &mut Vec<u8>)
where
    T: for<'a> BinWrite<Args<'a> = ()>,
{
    bytes::encode(v, endian(big), out);
}

// ---------------------------------------------------------------------------
// Image and domain headers

/// The 24-byte big-endian image header that starts every libxc v2 image.
/// Its first 8 bytes are all ones, which no legacy stream can start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BinRead, BinWrite)]
#[brw(big)]
pub struct ImageHeader {
    /// Always [`ImageHeader::MARKER`].
    pub marker: u64,
    /// Always [`ImageHeader::ID`] ("XENF").
    pub id: u32,
    /// 2 or 3 (3 adds STATIC_DATA_END and the CPUID/MSR policy records).
    pub version: u32,
    /// Bit 0: big-endian stream; bits 1–15 reserved.
    pub options: u16,
    /// Reserved, zero.
    pub reserved1: u16,
    /// Reserved, zero.
    pub reserved2: u32,
}

impl ImageHeader {
    /// Encoded size.
    pub const SIZE: usize = 24;
    /// `IHDR_MARKER`.
    pub const MARKER: u64 = 0xFFFF_FFFF_FFFF_FFFF;
    /// `IHDR_IDENT`, "XENF".
    pub const ID: u32 = 0x5845_4E46;
    /// Options bit 0: the rest of the stream is big-endian.
    pub(crate) const OPT_BIG_ENDIAN: u16 = 1;
    /// Options bits that must be zero.
    pub(crate) const OPT_RESERVED_MASK: u16 = 0xFFFE;

    /// A little-endian header of the given version (2 or 3).
    pub fn new(version: u32) -> Self {
        ImageHeader {
            marker: Self::MARKER,
            id: Self::ID,
            version,
            options: 0,
            reserved1: 0,
            reserved2: 0,
        }
    }

    /// True when options bit 0 says the stream body is big-endian.
    pub(crate) fn is_big_endian(&self) -> bool {
        self.options & Self::OPT_BIG_ENDIAN != 0
    }

    /// Decode from exactly [`Self::SIZE`] bytes; the offset is only for errors.
    pub fn parse(bytes: &[u8], offset: u64) -> Result<Self> {
        decode_fixed(bytes, Self::SIZE, true, offset, "image header")
    }

    /// Encode (24 bytes).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        encode_fixed(self, true)
    }

    /// The structural facts a reader cannot work without: marker, id, a
    /// version it understands and little-endian byte order.
    pub(crate) fn check_readable(&self, offset: u64) -> Result<()> {
        let ctx = Context::root().field("image header");
        if self.marker != Self::MARKER {
            return Err(Error::invalid(
                offset,
                ctx.field("marker"),
                format!("{:#x}", Self::MARKER),
                format!("{:#x}", self.marker),
            ));
        }
        if self.id != Self::ID {
            return Err(Error::invalid(
                offset + 8,
                ctx.field("id"),
                "0x58454e46 (\"XENF\")",
                format!("{:#x}", self.id),
            ));
        }
        if !(2..=3).contains(&self.version) {
            return Err(Error::invalid(
                offset + 12,
                ctx.field("version"),
                "2 or 3",
                self.version.to_string(),
            ));
        }
        if self.is_big_endian() {
            return Err(Error::invalid(
                offset + 16,
                ctx.field("options"),
                "a little-endian stream (bit 0 clear)",
                format!("options {:#x}", self.options),
            ));
        }
        Ok(())
    }
}

/// Domain type of the domain header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DomainType {
    /// 1: x86 PV.
    X86Pv,
    /// 2: x86 HVM.
    X86Hvm,
    /// Anything else (kept for round trips; Xen refuses it).
    Other(u32),
}

impl DomainType {
    /// The wire value.
    pub fn raw(self) -> u32 {
        match self {
            DomainType::X86Pv => 1,
            DomainType::X86Hvm => 2,
            DomainType::Other(v) => v,
        }
    }

    /// From the wire value.
    pub(crate) fn from_raw(v: u32) -> Self {
        match v {
            1 => DomainType::X86Pv,
            2 => DomainType::X86Hvm,
            v => DomainType::Other(v),
        }
    }
}

/// The 16-byte domain header following the image header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
pub struct DomainHeader {
    /// 1 = x86 PV, 2 = x86 HVM.
    pub domain_type: u32,
    /// 12 on x86.
    pub page_shift: u16,
    /// Reserved, zero.
    pub reserved: u16,
    /// Xen version of the saving host; 0 for streams converted from legacy.
    pub xen_major: u32,
    /// Minor version (the converter writes its own version, 1).
    pub xen_minor: u32,
}

impl DomainHeader {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// An x86 HVM header with page shift 12.
    pub fn hvm(xen_major: u32, xen_minor: u32) -> Self {
        DomainHeader {
            domain_type: 2,
            page_shift: 12,
            reserved: 0,
            xen_major,
            xen_minor,
        }
    }

    /// The domain type.
    pub(crate) fn kind(&self) -> DomainType {
        DomainType::from_raw(self.domain_type)
    }

    /// Decode from at least [`Self::SIZE`] bytes.
    pub fn parse(bytes: &[u8], offset: u64) -> Result<Self> {
        decode_fixed(bytes, Self::SIZE, false, offset, "domain header")
    }

    /// Encode (16 bytes).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        encode_fixed(self, false)
    }
}

// ---------------------------------------------------------------------------
// Record types

/// A libxc record type. Bit 31 marks an optional record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordType(pub u32);

impl RecordType {
    /// `REC_TYPE_END`.
    pub(crate) const END: Self = Self(0x00);
    /// `REC_TYPE_PAGE_DATA`.
    pub(crate) const PAGE_DATA: Self = Self(0x01);
    pub(crate) const X86_PV_INFO: Self = Self(0x02);
    pub(crate) const X86_PV_P2M_FRAMES: Self = Self(0x03);
    pub(crate) const X86_PV_VCPU_BASIC: Self = Self(0x04);
    pub(crate) const X86_PV_VCPU_EXTENDED: Self = Self(0x05);
    pub(crate) const X86_PV_VCPU_XSAVE: Self = Self(0x06);
    pub(crate) const SHARED_INFO: Self = Self(0x07);
    /// `REC_TYPE_X86_TSC_INFO`.
    pub(crate) const X86_TSC_INFO: Self = Self(0x08);
    /// `REC_TYPE_HVM_CONTEXT`.
    pub(crate) const HVM_CONTEXT: Self = Self(0x09);
    /// `REC_TYPE_HVM_PARAMS`.
    pub(crate) const HVM_PARAMS: Self = Self(0x0A);
    /// `REC_TYPE_TOOLSTACK`.
    pub(crate) const TOOLSTACK: Self = Self(0x0B);
    pub(crate) const X86_PV_VCPU_MSRS: Self = Self(0x0C);
    /// `REC_TYPE_VERIFY`.
    pub(crate) const VERIFY: Self = Self(0x0D);
    pub(crate) const CHECKPOINT: Self = Self(0x0E);
    pub(crate) const CHECKPOINT_DIRTY_PFN_LIST: Self = Self(0x0F);
    /// `REC_TYPE_STATIC_DATA_END`.
    pub(crate) const STATIC_DATA_END: Self = Self(0x10);
    pub(crate) const X86_CPUID_POLICY: Self = Self(0x11);
    pub(crate) const X86_MSR_POLICY: Self = Self(0x12);

    /// Bit 31: a restorer may skip the record if it does not know it.
    pub(crate) const OPTIONAL: u32 = 0x8000_0000;

    /// Xen's name for the type, or `None` for a type rev. 3 does not define.
    pub(crate) fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "END",
            0x01 => "PAGE_DATA",
            0x02 => "X86_PV_INFO",
            0x03 => "X86_PV_P2M_FRAMES",
            0x04 => "X86_PV_VCPU_BASIC",
            0x05 => "X86_PV_VCPU_EXTENDED",
            0x06 => "X86_PV_VCPU_XSAVE",
            0x07 => "SHARED_INFO",
            0x08 => "X86_TSC_INFO",
            0x09 => "HVM_CONTEXT",
            0x0A => "HVM_PARAMS",
            0x0B => "TOOLSTACK",
            0x0C => "X86_PV_VCPU_MSRS",
            0x0D => "VERIFY",
            0x0E => "CHECKPOINT",
            0x0F => "CHECKPOINT_DIRTY_PFN_LIST",
            0x10 => "STATIC_DATA_END",
            0x11 => "X86_CPUID_POLICY",
            0x12 => "X86_MSR_POLICY",
            _ => return None,
        })
    }

    /// True for a type defined by the spec.
    pub fn is_known(self) -> bool {
        self.name().is_some()
    }

    /// True when bit 31 is set.
    pub(crate) fn is_optional(self) -> bool {
        self.0 & Self::OPTIONAL != 0
    }

    /// The exact body length the spec requires, for fixed-size types.
    pub(crate) fn fixed_len(self) -> Option<u32> {
        match self {
            Self::END | Self::VERIFY | Self::CHECKPOINT | Self::STATIC_DATA_END => Some(0),
            Self::X86_PV_INFO => Some(8),
            Self::SHARED_INFO => Some(PAGE_SIZE as u32),
            Self::X86_TSC_INFO => Some(24),
            _ => None,
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "unknown type {:#x}", self.0),
        }
    }
}

// ---------------------------------------------------------------------------
// PAGE_DATA

/// One u64 of a PAGE_DATA pfn array: pfn in bits 0–51, reserved bits
/// 52–59, type (`XEN_DOMCTL_PFINFO_*` >> 28) in bits 60–63.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PageDataEntry(pub u64);

impl PageDataEntry {
    /// Bits holding the pfn.
    pub(crate) const PFN_MASK: u64 = (1 << 52) - 1;
    /// Bits that must be zero.
    pub(crate) const RESERVED_MASK: u64 = ((1 << 60) - 1) & !Self::PFN_MASK;
    /// Shift of the type nibble.
    pub(crate) const TYPE_SHIFT: u32 = 60;

    /// An entry of the given type. Pfn bits above 51 are dropped.
    pub fn new(pfn: u64, kind: PfnType) -> Self {
        PageDataEntry((pfn & Self::PFN_MASK) | (u64::from(kind.nibble() & 0xF) << Self::TYPE_SHIFT))
    }

    /// An ordinary page carrying data.
    pub fn page(pfn: u64) -> Self {
        Self::new(pfn, PfnType::Normal)
    }

    /// An XTAB entry (the saver could not map the page; no data).
    pub fn xtab(pfn: u64) -> Self {
        Self::new(pfn, PfnType::XTab)
    }

    /// Re-encode a legacy pfn word exactly as `convert-legacy-stream` does:
    /// the type nibble moves from bits 28–31 to 60–63 and only the low 28
    /// pfn bits survive (legacy pfns never exceed them).
    pub fn from_legacy(e: PfnEntry) -> Self {
        let x = e.raw();
        PageDataEntry(((x & LTAB_MASK) << 32) | (x & 0x0FFF_FFFF))
    }

    /// The raw word.
    pub(crate) fn raw(self) -> u64 {
        self.0
    }

    /// The pfn.
    pub(crate) fn pfn(self) -> Pfn {
        Pfn(self.0 & Self::PFN_MASK)
    }

    /// The type nibble.
    pub(crate) fn type_nibble(self) -> u8 {
        (self.0 >> Self::TYPE_SHIFT) as u8
    }

    /// The type.
    pub(crate) fn kind(self) -> PfnType {
        PfnType::from_nibble(self.type_nibble())
    }

    /// Reserved bits 52–59 that are set.
    pub(crate) fn reserved_bits(self) -> u64 {
        self.0 & Self::RESERVED_MASK
    }

    /// Types 5–8 have no meaning in a v2 stream.
    pub(crate) fn has_valid_type(self) -> bool {
        !(5..=8).contains(&self.type_nibble())
    }

    /// 4096 bytes follow for normal and (pinned) page-table pages, none for
    /// BROKEN, XALLOC and XTAB — Xen tests `type & 7 <= 4`.
    pub fn has_data(self) -> bool {
        self.type_nibble() & 7 <= 4
    }
}

impl fmt::Display for PageDataEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            PfnType::Normal => write!(f, "{}", self.pfn()),
            k => write!(f, "{} ({:?})", self.pfn(), k),
        }
    }
}

/// A PAGE_DATA body: pfn entries and the pages of those that carry data,
/// back to back in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageData<'a> {
    /// Reserved u32 after the count (zero).
    pub reserved: u32,
    /// The pfn array.
    pub entries: Vec<PageDataEntry>,
    /// 4096 bytes for each entry with [`PageDataEntry::has_data`].
    pub pages: Cow<'a, [u8]>,
}

impl<'a> PageData<'a> {
    /// Pages carrying data among `entries`.
    pub fn data_pages(entries: &[PageDataEntry]) -> usize {
        entries.iter().filter(|e| e.has_data()).count()
    }

    /// Each entry with its page, if it carries one.
    pub fn iter(&self) -> impl Iterator<Item = (PageDataEntry, Option<&[u8]>)> + '_ {
        let mut pages = self.pages.chunks_exact(PAGE_SIZE);
        self.entries.iter().map(move |&e| {
            let page = if e.has_data() { pages.next() } else { None };
            (e, page)
        })
    }

    /// Copy borrowed pages so the body outlives its buffer.
    pub fn into_owned(self) -> PageData<'static> {
        PageData {
            reserved: self.reserved,
            entries: self.entries,
            pages: Cow::Owned(self.pages.into_owned()),
        }
    }

    fn parse(body: &'a [u8], offset: u64, ctx: &Context) -> Result<Self> {
        if body.len() < 8 {
            return Err(Error::truncated(
                offset,
                ctx.field("count"),
                8,
                body.len() as u64,
            ));
        }
        let count = le::<u32>(body, 0).unwrap_or_default();
        let reserved = le::<u32>(body, 4).unwrap_or_default();
        let pfn_bytes = u64::from(count) * 8;
        let after_header = (body.len() - 8) as u64;
        if pfn_bytes > after_header {
            return Err(Error::new(
                offset,
                ctx.field("count"),
                ErrorKind::Oversized {
                    what: "PAGE_DATA pfn array",
                    claimed: pfn_bytes,
                    remaining: after_header,
                },
            ));
        }
        let pfn_end = 8 + pfn_bytes as usize;
        let entries: Vec<PageDataEntry> =
            slice_at(body, 8, pfn_end, offset + 8, || ctx.field("pfn"))?
                .chunks_exact(8)
                .map(|c| PageDataEntry(le::<u64>(c, 0).unwrap_or_default()))
                .collect();
        let want = Self::data_pages(&entries) as u64 * PAGE_SIZE as u64;
        // Short or missing page bytes fail the length check just below.
        let pages = body.get(pfn_end..).unwrap_or_default();
        if pages.len() as u64 != want {
            return Err(Error::invalid(
                offset + pfn_end as u64,
                ctx.field("pages"),
                format!(
                    "{want} bytes of page data (8 + 8·{count} + 4096·{} = {} byte body)",
                    want / PAGE_SIZE as u64,
                    pfn_end as u64 + want
                ),
                format!("{} bytes", pages.len()),
            ));
        }
        Ok(PageData {
            reserved,
            entries,
            pages: Cow::Borrowed(pages),
        })
    }

    /// The body up to the pages (count, reserved, pfns).
    pub(crate) fn encode_head(entries: &[PageDataEntry], reserved: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&reserved.to_le_bytes());
        for e in entries {
            out.extend_from_slice(&e.0.to_le_bytes());
        }
    }
}

// ---------------------------------------------------------------------------
// Fixed-layout bodies

/// X86_PV_INFO: the PV guest's word size and page-table depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
pub struct X86PvInfo {
    /// 4 or 8.
    pub guest_width: u8,
    /// 3 or 4.
    pub pt_levels: u8,
    /// Reserved, zero.
    pub reserved1: u16,
    /// Reserved, zero.
    pub reserved2: u32,
}

/// X86_TSC_INFO (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
pub struct TscInfo {
    /// `XEN_DOMCTL_tsc_mode` of the domain.
    pub mode: u32,
    /// Guest TSC frequency.
    pub khz: u32,
    /// Elapsed nanoseconds.
    pub nsec: u64,
    /// Incarnation (number of migrations).
    pub incarnation: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// One `{index, value}` pair of HVM_PARAMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
pub struct HvmParam {
    /// `HVM_PARAM_*` index.
    pub index: u64,
    /// Value.
    pub value: u64,
}

impl HvmParam {
    /// `HVM_PARAM_STORE_PFN`.
    pub const STORE_PFN: u64 = 1;
    /// `HVM_PARAM_IOREQ_PFN`.
    pub const IOREQ_PFN: u64 = 5;
    /// `HVM_PARAM_BUFIOREQ_PFN`.
    pub const BUFIOREQ_PFN: u64 = 6;
}

/// HVM_PARAMS: the HVM parameters the restorer sets before loading the
/// context (the magic pfns among them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HvmParams {
    /// Reserved, zero.
    pub reserved: u32,
    /// The pairs.
    pub params: Vec<HvmParam>,
}

impl HvmParams {
    /// HVM_PARAMS from `(index, value)` pairs, in order.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Self {
        HvmParams {
            reserved: 0,
            params: pairs
                .into_iter()
                .map(|(index, value)| HvmParam { index, value })
                .collect(),
        }
    }
}

/// One `xen_cpuid_leaf_t` of X86_CPUID_POLICY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
pub struct CpuidLeaf {
    /// `xen_cpuid_leaf_t.leaf`.
    pub leaf: u32,
    /// `xen_cpuid_leaf_t.subleaf`.
    pub subleaf: u32,
    /// `xen_cpuid_leaf_t.a`.
    pub a: u32,
    /// `xen_cpuid_leaf_t.b`.
    pub b: u32,
    /// `xen_cpuid_leaf_t.c`.
    pub c: u32,
    /// `xen_cpuid_leaf_t.d`.
    pub d: u32,
}

/// One `xen_msr_entry_t` of X86_MSR_POLICY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
pub struct MsrEntry {
    /// `xen_msr_entry_t.idx`.
    pub idx: u32,
    /// `xen_msr_entry_t.flags`.
    pub flags: u32,
    /// `xen_msr_entry_t.val`.
    pub val: u64,
}

/// X86_PV_P2M_FRAMES: frames of the PV guest's p2m between `start` and `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2mFrames {
    /// First pfn whose p2m frame is listed.
    pub start: u32,
    /// Last pfn whose p2m frame is listed.
    pub end: u32,
    /// The frame numbers.
    pub frames: Vec<u64>,
}

/// The X86_PV_VCPU_{BASIC,EXTENDED,XSAVE,MSRS} layout: vcpu id, reserved,
/// an opaque context blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvVcpu<'a> {
    /// The vCPU this context belongs to.
    pub vcpu_id: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The context bytes, opaque here.
    pub context: Cow<'a, [u8]>,
}

// ---------------------------------------------------------------------------
// Bodies

/// A typed libxc record body.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordBody<'a> {
    /// An `END` record.
    End,
    /// A `PAGE_DATA` record.
    PageData(PageData<'a>),
    /// A `X86_PV_INFO` record.
    X86PvInfo(X86PvInfo),
    /// A `X86_PV_P2M_FRAMES` record.
    X86PvP2mFrames(P2mFrames),
    /// A `X86_PV_VCPU_BASIC` record.
    X86PvVcpuBasic(PvVcpu<'a>),
    /// A `X86_PV_VCPU_EXTENDED` record.
    X86PvVcpuExtended(PvVcpu<'a>),
    /// A `X86_PV_VCPU_XSAVE` record.
    X86PvVcpuXsave(PvVcpu<'a>),
    /// A `X86_PV_VCPU_MSRS` record.
    X86PvVcpuMsrs(PvVcpu<'a>),
    /// 4096 bytes of `shared_info`.
    SharedInfo(Cow<'a, [u8]>),
    /// A `X86_TSC_INFO` record.
    X86TscInfo(TscInfo),
    /// The HVM context blob (docs/format.md §5), not parsed here.
    HvmContext(Cow<'a, [u8]>),
    /// A `HVM_PARAMS` record.
    HvmParams(HvmParams),
    /// Deprecated libxl toolstack data, opaque.
    Toolstack(Cow<'a, [u8]>),
    /// A `VERIFY` record.
    Verify,
    /// A `CHECKPOINT` record.
    Checkpoint,
    /// A `CHECKPOINT_DIRTY_PFN_LIST` record.
    CheckpointDirtyPfnList(Vec<u64>),
    /// A `STATIC_DATA_END` record.
    StaticDataEnd,
    /// A `X86_CPUID_POLICY` record.
    X86CpuidPolicy(Vec<CpuidLeaf>),
    /// A `X86_MSR_POLICY` record.
    X86MsrPolicy(Vec<MsrEntry>),
    /// A type this crate does not know, kept byte for byte.
    Unknown {
        /// The record type.
        rtype: RecordType,
        /// The body as found.
        data: Cow<'a, [u8]>,
    },
}

impl<'a> RecordBody<'a> {
    /// The record type this body is written with.
    pub fn rtype(&self) -> RecordType {
        use RecordBody as B;
        match self {
            B::End => RecordType::END,
            B::PageData(_) => RecordType::PAGE_DATA,
            B::X86PvInfo(_) => RecordType::X86_PV_INFO,
            B::X86PvP2mFrames(_) => RecordType::X86_PV_P2M_FRAMES,
            B::X86PvVcpuBasic(_) => RecordType::X86_PV_VCPU_BASIC,
            B::X86PvVcpuExtended(_) => RecordType::X86_PV_VCPU_EXTENDED,
            B::X86PvVcpuXsave(_) => RecordType::X86_PV_VCPU_XSAVE,
            B::X86PvVcpuMsrs(_) => RecordType::X86_PV_VCPU_MSRS,
            B::SharedInfo(_) => RecordType::SHARED_INFO,
            B::X86TscInfo(_) => RecordType::X86_TSC_INFO,
            B::HvmContext(_) => RecordType::HVM_CONTEXT,
            B::HvmParams(_) => RecordType::HVM_PARAMS,
            B::Toolstack(_) => RecordType::TOOLSTACK,
            B::Verify => RecordType::VERIFY,
            B::Checkpoint => RecordType::CHECKPOINT,
            B::CheckpointDirtyPfnList(_) => RecordType::CHECKPOINT_DIRTY_PFN_LIST,
            B::StaticDataEnd => RecordType::STATIC_DATA_END,
            B::X86CpuidPolicy(_) => RecordType::X86_CPUID_POLICY,
            B::X86MsrPolicy(_) => RecordType::X86_MSR_POLICY,
            B::Unknown { rtype, .. } => *rtype,
        }
    }

    /// Decode the body of a record of type `rtype`. `offset` is the file
    /// offset of the body, `ctx` the record's context path. Unknown types
    /// are kept raw; a known type whose body does not fit its layout is an
    /// error (the raw record is still available to the caller).
    pub fn parse(rtype: RecordType, body: &'a [u8], offset: u64, ctx: &Context) -> Result<Self> {
        use RecordBody as B;
        let len = body.len() as u64;
        if let Some(fixed) = rtype.fixed_len() {
            if len != u64::from(fixed) {
                return Err(Error::invalid(
                    offset.saturating_sub(4),
                    ctx.field("body_length"),
                    format!("{fixed} for {rtype}"),
                    len.to_string(),
                ));
            }
        }
        let at_least = |min: u64, what: &'static str| -> Result<()> {
            if len < min {
                Err(Error::invalid(
                    offset.saturating_sub(4),
                    ctx.field("body_length"),
                    format!("at least {min} for {what}"),
                    len.to_string(),
                ))
            } else {
                Ok(())
            }
        };
        let multiple_of = |unit: u64, from: u64, what: &'static str| -> Result<()> {
            if (len - from) % unit != 0 {
                Err(Error::invalid(
                    offset.saturating_sub(4),
                    ctx.field("body_length"),
                    format!("{from} + a multiple of {unit} for {what}"),
                    len.to_string(),
                ))
            } else {
                Ok(())
            }
        };
        let pv_vcpu = |what| -> Result<PvVcpu<'a>> {
            at_least(8, what)?;
            Ok(PvVcpu {
                vcpu_id: le::<u32>(body, 0).unwrap_or_default(),
                reserved: le::<u32>(body, 4).unwrap_or_default(),
                // `at_least(8)` above: the context is the rest, maybe empty.
                context: Cow::Borrowed(body.get(8..).unwrap_or_default()),
            })
        };
        Ok(match rtype {
            RecordType::END => B::End,
            RecordType::VERIFY => B::Verify,
            RecordType::CHECKPOINT => B::Checkpoint,
            RecordType::STATIC_DATA_END => B::StaticDataEnd,
            RecordType::PAGE_DATA => B::PageData(PageData::parse(body, offset, ctx)?),
            RecordType::X86_PV_INFO => B::X86PvInfo(decode(body, false, offset, ctx)?),
            RecordType::X86_PV_P2M_FRAMES => {
                at_least(8, "X86_PV_P2M_FRAMES")?;
                multiple_of(8, 8, "X86_PV_P2M_FRAMES")?;
                B::X86PvP2mFrames(P2mFrames {
                    start: le::<u32>(body, 0).unwrap_or_default(),
                    end: le::<u32>(body, 4).unwrap_or_default(),
                    // `at_least(8)` above: the frames are the rest.
                    frames: body
                        .get(8..)
                        .unwrap_or_default()
                        .chunks_exact(8)
                        .map(|c| le::<u64>(c, 0).unwrap_or_default())
                        .collect(),
                })
            }
            RecordType::X86_PV_VCPU_BASIC => B::X86PvVcpuBasic(pv_vcpu("X86_PV_VCPU_BASIC")?),
            RecordType::X86_PV_VCPU_EXTENDED => {
                B::X86PvVcpuExtended(pv_vcpu("X86_PV_VCPU_EXTENDED")?)
            }
            RecordType::X86_PV_VCPU_XSAVE => B::X86PvVcpuXsave(pv_vcpu("X86_PV_VCPU_XSAVE")?),
            RecordType::X86_PV_VCPU_MSRS => B::X86PvVcpuMsrs(pv_vcpu("X86_PV_VCPU_MSRS")?),
            RecordType::SHARED_INFO => B::SharedInfo(Cow::Borrowed(body)),
            RecordType::X86_TSC_INFO => B::X86TscInfo(decode(body, false, offset, ctx)?),
            RecordType::HVM_CONTEXT => B::HvmContext(Cow::Borrowed(body)),
            RecordType::HVM_PARAMS => {
                at_least(8, "HVM_PARAMS")?;
                let count = u64::from(le::<u32>(body, 0).unwrap_or_default());
                let want = 8 + 16 * count;
                if want != len {
                    return Err(Error::invalid(
                        offset,
                        ctx.field("count"),
                        format!("8 + 16·count = {len} body bytes"),
                        format!("count {count} (needs {want} bytes)"),
                    ));
                }
                let mut params = Vec::with_capacity(count as usize);
                // `want == len` above: the rest is exactly `count` pairs.
                for c in body.get(8..).unwrap_or_default().chunks_exact(16) {
                    params.push(decode(c, false, offset, ctx)?);
                }
                B::HvmParams(HvmParams {
                    reserved: le::<u32>(body, 4).unwrap_or_default(),
                    params,
                })
            }
            RecordType::TOOLSTACK => B::Toolstack(Cow::Borrowed(body)),
            RecordType::CHECKPOINT_DIRTY_PFN_LIST => {
                multiple_of(8, 0, "CHECKPOINT_DIRTY_PFN_LIST")?;
                B::CheckpointDirtyPfnList(
                    body.chunks_exact(8)
                        .map(|c| le::<u64>(c, 0).unwrap_or_default())
                        .collect(),
                )
            }
            RecordType::X86_CPUID_POLICY => {
                multiple_of(24, 0, "X86_CPUID_POLICY")?;
                let mut v = Vec::with_capacity(body.len() / 24);
                for c in body.chunks_exact(24) {
                    v.push(decode(c, false, offset, ctx)?);
                }
                B::X86CpuidPolicy(v)
            }
            RecordType::X86_MSR_POLICY => {
                multiple_of(16, 0, "X86_MSR_POLICY")?;
                let mut v = Vec::with_capacity(body.len() / 16);
                for c in body.chunks_exact(16) {
                    v.push(decode(c, false, offset, ctx)?);
                }
                B::X86MsrPolicy(v)
            }
            rtype => B::Unknown {
                rtype,
                data: Cow::Borrowed(body),
            },
        })
    }

    /// Length of the encoded body (without header and padding).
    pub(crate) fn encoded_len(&self) -> u64 {
        use RecordBody as B;
        match self {
            B::End | B::Verify | B::Checkpoint | B::StaticDataEnd => 0,
            B::PageData(p) => 8 + 8 * p.entries.len() as u64 + p.pages.len() as u64,
            B::X86PvInfo(_) => 8,
            B::X86PvP2mFrames(p) => 8 + 8 * p.frames.len() as u64,
            B::X86PvVcpuBasic(v)
            | B::X86PvVcpuExtended(v)
            | B::X86PvVcpuXsave(v)
            | B::X86PvVcpuMsrs(v) => 8 + v.context.len() as u64,
            B::SharedInfo(d) | B::HvmContext(d) | B::Toolstack(d) => d.len() as u64,
            B::Unknown { data, .. } => data.len() as u64,
            B::X86TscInfo(_) => 24,
            B::HvmParams(p) => 8 + 16 * p.params.len() as u64,
            B::CheckpointDirtyPfnList(v) => 8 * v.len() as u64,
            B::X86CpuidPolicy(v) => 24 * v.len() as u64,
            B::X86MsrPolicy(v) => 16 * v.len() as u64,
        }
    }

    /// Append the encoded body (without header and padding).
    pub fn encode(&self, out: &mut Vec<u8>) {
        use RecordBody as B;
        match self {
            B::End | B::Verify | B::Checkpoint | B::StaticDataEnd => {}
            B::PageData(p) => {
                PageData::encode_head(&p.entries, p.reserved, out);
                out.extend_from_slice(&p.pages);
            }
            B::X86PvInfo(i) => encode(i, false, out),
            B::X86PvP2mFrames(p) => {
                out.extend_from_slice(&p.start.to_le_bytes());
                out.extend_from_slice(&p.end.to_le_bytes());
                for f in &p.frames {
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
            B::X86PvVcpuBasic(v)
            | B::X86PvVcpuExtended(v)
            | B::X86PvVcpuXsave(v)
            | B::X86PvVcpuMsrs(v) => {
                out.extend_from_slice(&v.vcpu_id.to_le_bytes());
                out.extend_from_slice(&v.reserved.to_le_bytes());
                out.extend_from_slice(&v.context);
            }
            B::SharedInfo(d) | B::HvmContext(d) | B::Toolstack(d) => out.extend_from_slice(d),
            B::Unknown { data, .. } => out.extend_from_slice(data),
            B::X86TscInfo(t) => encode(t, false, out),
            B::HvmParams(p) => {
                out.extend_from_slice(&(p.params.len() as u32).to_le_bytes());
                out.extend_from_slice(&p.reserved.to_le_bytes());
                for e in &p.params {
                    encode(e, false, out);
                }
            }
            B::CheckpointDirtyPfnList(v) => {
                for f in v {
                    out.extend_from_slice(&f.to_le_bytes());
                }
            }
            B::X86CpuidPolicy(v) => v.iter().for_each(|l| encode(l, false, out)),
            B::X86MsrPolicy(v) => v.iter().for_each(|m| encode(m, false, out)),
        }
    }

    /// Copy any borrowed bytes so the body outlives the reader's buffer.
    pub fn into_owned(self) -> RecordBody<'static> {
        use RecordBody as B;
        let own = |c: Cow<'a, [u8]>| Cow::Owned(c.into_owned());
        let vcpu = |v: PvVcpu<'a>| PvVcpu {
            vcpu_id: v.vcpu_id,
            reserved: v.reserved,
            context: Cow::Owned(v.context.into_owned()),
        };
        match self {
            B::End => B::End,
            B::PageData(p) => B::PageData(p.into_owned()),
            B::X86PvInfo(i) => B::X86PvInfo(i),
            B::X86PvP2mFrames(p) => B::X86PvP2mFrames(p),
            B::X86PvVcpuBasic(v) => B::X86PvVcpuBasic(vcpu(v)),
            B::X86PvVcpuExtended(v) => B::X86PvVcpuExtended(vcpu(v)),
            B::X86PvVcpuXsave(v) => B::X86PvVcpuXsave(vcpu(v)),
            B::X86PvVcpuMsrs(v) => B::X86PvVcpuMsrs(vcpu(v)),
            B::SharedInfo(d) => B::SharedInfo(own(d)),
            B::X86TscInfo(t) => B::X86TscInfo(t),
            B::HvmContext(d) => B::HvmContext(own(d)),
            B::HvmParams(p) => B::HvmParams(p),
            B::Toolstack(d) => B::Toolstack(own(d)),
            B::Verify => B::Verify,
            B::Checkpoint => B::Checkpoint,
            B::CheckpointDirtyPfnList(v) => B::CheckpointDirtyPfnList(v),
            B::StaticDataEnd => B::StaticDataEnd,
            B::X86CpuidPolicy(v) => B::X86CpuidPolicy(v),
            B::X86MsrPolicy(v) => B::X86MsrPolicy(v),
            B::Unknown { rtype, data } => B::Unknown {
                rtype,
                data: own(data),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_header_is_big_endian() {
        let b = ImageHeader::new(3).to_bytes();
        assert_eq!(&b[..8], &[0xFF; 8]);
        assert_eq!(&b[8..12], b"XENF");
        assert_eq!(&b[12..16], &[0, 0, 0, 3]);
        assert_eq!(ImageHeader::parse(&b, 0).unwrap(), ImageHeader::new(3));
    }

    #[test]
    fn legacy_pfn_reencoding_moves_type_nibble() {
        let e = PageDataEntry::from_legacy(PfnEntry::xtab(0x1234));
        assert_eq!(e.raw(), 0xF000_0000_0000_1234);
        assert_eq!(e.kind(), PfnType::XTab);
        assert!(!e.has_data());
        let p = PageDataEntry::from_legacy(PfnEntry::page(0x0ABC_DEF5));
        assert_eq!(p.raw(), 0x0ABC_DEF5);
        assert!(p.has_data());
    }

    #[test]
    fn pinned_tables_carry_data_broken_does_not() {
        assert!(PageDataEntry(0x9 << 60).has_data());
        assert!(PageDataEntry(0xC << 60).has_data());
        assert!(!PageDataEntry(0xD << 60).has_data());
        assert!(!PageDataEntry(0xE << 60).has_data());
        assert!(!PageDataEntry(0x8 << 60).has_valid_type());
    }
}
