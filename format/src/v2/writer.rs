//! Writing a libxc v2 image.
//!
//! The [`Writer`] emits the two headers, then records with their zero
//! padding, and refuses what a current Xen restorer or `verify-stream-v2`
//! would reject: anything after END, STATIC_DATA_END or policy records in a
//! version 2 stream, policies after STATIC_DATA_END, PAGE_DATA before it in
//! version 3, HVM_PARAMS after HVM_CONTEXT, PV records in an HVM stream and
//! vice versa, and PAGE_DATA whose pages do not match its pfns.

use std::io::{IoSlice, Write};

use super::libxc::{
    DomainHeader, DomainType, ImageHeader, PageData, PageDataEntry, RecordBody, RecordType,
};
use super::padding_len;
use crate::bytes::write_all_vectored;
use crate::diag::{Context, Error, ErrorKind, Result};
use crate::pfn::PAGE_SIZE;

const ZEROS: [u8; 8] = [0; 8];

/// Writer of a libxc v2 image over any `Write`.
pub struct Writer<W> {
    w: W,
    offset: u64,
    version: u32,
    domain: DomainType,
    index: u64,
    ended: bool,
    static_data_end: bool,
    hvm_context: bool,
    last: &'static str,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Write the image and domain headers at file offset 0.
    pub fn new(w: W, image: ImageHeader, domain: DomainHeader) -> Result<Self> {
        Self::with_offset(w, 0, image, domain)
    }

    /// As [`new`](Self::new) for an image that starts at file offset
    /// `offset` (inside a libxl or xl file).
    pub fn with_offset(
        w: W,
        offset: u64,
        image: ImageHeader,
        domain: DomainHeader,
    ) -> Result<Self> {
        image.check_readable(offset)?;
        if image.options & ImageHeader::OPT_RESERVED_MASK != 0
            || image.reserved1 != 0
            || image.reserved2 != 0
        {
            return Err(Error::invalid(
                offset + 16,
                Context::root().field("image header").field("options"),
                "reserved options and fields zero",
                format!(
                    "options {:#x}, reserved {:#x}:{:#x}",
                    image.options, image.reserved1, image.reserved2
                ),
            ));
        }
        let dh_at = offset + ImageHeader::SIZE as u64;
        let dctx = Context::root().field("domain header");
        if !matches!(domain.kind(), DomainType::X86Pv | DomainType::X86Hvm) {
            return Err(Error::invalid(
                dh_at,
                dctx.field("type"),
                "1 (x86 PV) or 2 (x86 HVM)",
                domain.domain_type.to_string(),
            ));
        }
        if domain.page_shift != 12 || domain.reserved != 0 {
            return Err(Error::invalid(
                dh_at + 4,
                dctx.field("page_shift"),
                "page_shift 12, reserved 0",
                format!(
                    "page_shift {}, reserved {:#x}",
                    domain.page_shift, domain.reserved
                ),
            ));
        }
        let mut me = Writer {
            w,
            offset,
            version: image.version,
            domain: domain.kind(),
            index: 0,
            ended: false,
            static_data_end: false,
            hvm_context: false,
            last: "domain header",
            scratch: Vec::new(),
        };
        let mut head = [0u8; ImageHeader::SIZE + DomainHeader::SIZE];
        head[..ImageHeader::SIZE].copy_from_slice(&image.to_bytes());
        head[ImageHeader::SIZE..].copy_from_slice(&domain.to_bytes());
        me.put(
            &mut [IoSlice::new(&head)],
            Context::root().field("image header"),
        )?;
        Ok(me)
    }

    /// File offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The image version being written.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// True once END has been written.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    fn put(&mut self, bufs: &mut [IoSlice<'_>], ctx: Context) -> Result<()> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        write_all_vectored(&mut self.w, bufs)
            .map_err(|e| Error::new(self.offset, ctx, ErrorKind::Io(e)))?;
        self.offset += n as u64;
        Ok(())
    }

    fn ctx(&self) -> Context {
        Context::root().index("record", self.index)
    }

    fn out_of_order(&self, item: &'static str, after: &'static str) -> Error {
        Error::new(
            self.offset,
            self.ctx(),
            ErrorKind::OutOfOrder { item, after },
        )
    }

    /// The ordering rules; `name` is the record's spec name.
    fn admit(&mut self, rtype: RecordType) -> Result<&'static str> {
        let name = rtype.name().unwrap_or("unknown record");
        if self.ended {
            return Err(self.out_of_order(name, "END"));
        }
        let v3 = self.version >= 3;
        match rtype {
            RecordType::STATIC_DATA_END
            | RecordType::X86_CPUID_POLICY
            | RecordType::X86_MSR_POLICY
                if !v3 =>
            {
                return Err(Error::invalid(
                    self.offset,
                    self.ctx().field("type"),
                    "a record defined for a version 2 image",
                    format!("{name}, which needs version 3"),
                ));
            }
            RecordType::STATIC_DATA_END if self.static_data_end => {
                return Err(self.out_of_order(name, "STATIC_DATA_END"));
            }
            RecordType::X86_CPUID_POLICY | RecordType::X86_MSR_POLICY | RecordType::X86_PV_INFO
                if self.static_data_end =>
            {
                return Err(self.out_of_order(name, "STATIC_DATA_END"));
            }
            RecordType::PAGE_DATA if v3 && !self.static_data_end => {
                return Err(self.out_of_order(name, self.last));
            }
            RecordType::HVM_PARAMS if self.hvm_context => {
                return Err(self.out_of_order(name, "HVM_CONTEXT"));
            }
            _ => {}
        }
        let pv_only = matches!(
            rtype,
            RecordType::X86_PV_INFO
                | RecordType::X86_PV_P2M_FRAMES
                | RecordType::X86_PV_VCPU_BASIC
                | RecordType::X86_PV_VCPU_EXTENDED
                | RecordType::X86_PV_VCPU_XSAVE
                | RecordType::X86_PV_VCPU_MSRS
                | RecordType::SHARED_INFO
        );
        let hvm_only = matches!(rtype, RecordType::HVM_CONTEXT | RecordType::HVM_PARAMS);
        if (pv_only && self.domain == DomainType::X86Hvm)
            || (hvm_only && self.domain == DomainType::X86Pv)
        {
            return Err(Error::invalid(
                self.offset,
                self.ctx().field("type"),
                format!("a record valid for an {:?} domain", self.domain),
                name,
            ));
        }
        Ok(name)
    }

    fn note(&mut self, rtype: RecordType, name: &'static str) {
        match rtype {
            RecordType::END => self.ended = true,
            RecordType::STATIC_DATA_END => self.static_data_end = true,
            RecordType::HVM_CONTEXT => self.hvm_context = true,
            _ => {}
        }
        self.last = name;
        self.index += 1;
    }

    /// Write one record; returns its file offset.
    pub fn record(&mut self, body: &RecordBody<'_>) -> Result<u64> {
        if let RecordBody::PageData(p) = body {
            return self.page_data_with_reserved(&p.entries, &p.pages, p.reserved);
        }
        let rtype = body.rtype();
        let name = self.admit(rtype)?;
        let len = body.encoded_len();
        let len32 = u32::try_from(len).map_err(|_| {
            Error::invalid(
                self.offset + 4,
                self.ctx().field("body_length"),
                "a body below 4 GiB",
                len.to_string(),
            )
        })?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.extend_from_slice(&rtype.0.to_le_bytes());
        buf.extend_from_slice(&len32.to_le_bytes());
        body.encode(&mut buf);
        debug_assert_eq!(buf.len() as u64, 8 + len);
        buf.extend_from_slice(&ZEROS[..padding_len(len) as usize]);
        let at = self.offset;
        let r = self.put(&mut [IoSlice::new(&buf)], self.ctx());
        self.scratch = buf;
        r?;
        self.note(rtype, name);
        Ok(at)
    }

    /// Write a PAGE_DATA record in one vectored write: `pages` holds 4096
    /// bytes for each entry that carries data, in entry order. Returns the
    /// record's file offset.
    pub fn page_data(&mut self, entries: &[PageDataEntry], pages: &[u8]) -> Result<u64> {
        self.page_data_with_reserved(entries, pages, 0)
    }

    fn page_data_with_reserved(
        &mut self,
        entries: &[PageDataEntry],
        pages: &[u8],
        reserved: u32,
    ) -> Result<u64> {
        let name = self.admit(RecordType::PAGE_DATA)?;
        let ctx = self.ctx();
        if entries.is_empty() {
            return Err(Error::invalid(
                self.offset + 8,
                ctx.field("count"),
                "at least one pfn",
                "0",
            ));
        }
        for (i, e) in entries.iter().enumerate() {
            if e.reserved_bits() != 0 || !e.has_valid_type() {
                return Err(Error::invalid(
                    self.offset + 16 + 8 * i as u64,
                    ctx.index("pfn", i as u64),
                    "no reserved bits (52–59) and a type other than 5–8",
                    format!("{:#018x}", e.raw()),
                ));
            }
        }
        let want = PageData::data_pages(entries) * PAGE_SIZE;
        if pages.len() != want {
            return Err(Error::invalid(
                self.offset + 16 + 8 * entries.len() as u64,
                ctx.field("pages"),
                format!("{want} bytes (4096 per pfn with data)"),
                format!("{} bytes", pages.len()),
            ));
        }
        let len = 8 + 8 * entries.len() as u64 + pages.len() as u64;
        let len32 = u32::try_from(len).map_err(|_| {
            Error::invalid(
                self.offset + 4,
                ctx.field("body_length"),
                "a body below 4 GiB",
                len.to_string(),
            )
        })?;
        let mut head = std::mem::take(&mut self.scratch);
        head.clear();
        head.extend_from_slice(&RecordType::PAGE_DATA.0.to_le_bytes());
        head.extend_from_slice(&len32.to_le_bytes());
        PageData::encode_head(entries, reserved, &mut head);
        // Pfns and pages are multiples of 8 bytes: no padding.
        let at = self.offset;
        let r = self.put(&mut [IoSlice::new(&head), IoSlice::new(pages)], ctx);
        self.scratch = head;
        r?;
        self.note(RecordType::PAGE_DATA, name);
        Ok(at)
    }

    /// Write END; afterwards every record is refused.
    pub fn end(&mut self) -> Result<u64> {
        self.record(&RecordBody::End)
    }

    /// Write END if not yet written, flush, and return the sink.
    pub fn finish(mut self) -> Result<W> {
        if !self.ended {
            self.end()?;
        }
        let at = self.offset;
        self.w
            .flush()
            .map_err(|e| Error::new(at, Context::root(), ErrorKind::Io(e)))?;
        Ok(self.w)
    }

    /// The sink, as it is (END possibly not written).
    pub fn into_inner(self) -> W {
        self.w
    }
}
