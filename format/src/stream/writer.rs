//! The stream writer: the readers' mirror image.

use std::io::{IoSlice, Write};

use super::item::Item;
use crate::bytes::write_all_vectored;
use crate::diag::{Context, Error, ErrorKind, Result};
use crate::pfn::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};

/// Where the writer is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Pages { verify: bool },
    VcpuCount,
    Vcpus { left: u32 },
    HvmBlob,
    Done,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Start => "the start of the stream",
            State::Pages { verify: false } => "max_pfn or a batch",
            State::Pages { verify: true } => "the verify marker or a verify batch",
            State::VcpuCount => "the terminator",
            State::Vcpus { .. } => "nr_vcpus or a vcpu record",
            State::HvmBlob => "the last vcpu record",
            State::Done => "the hvm blob",
        }
    }
}

/// Writes a seed-dialect stream. Items must come in grammar order; anything
/// else is refused with [`ErrorKind::OutOfOrder`] and nothing is written.
/// Each batch goes out as one vectored write (count, pfn array, pages).
pub struct Writer<W> {
    out: W,
    word: WordSize,
    state: State,
    pos: u64,
    batches: u64,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// A writer for a toolstack of word size `word`.
    pub fn new(out: W, word: WordSize) -> Self {
        Writer {
            out,
            word,
            state: State::Start,
            pos: 0,
            batches: 0,
            scratch: Vec::with_capacity(4 + MAX_BATCH * 8),
        }
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The word size being written.
    pub fn word(&self) -> WordSize {
        self.word
    }

    fn refuse(&self, item: &'static str) -> Error {
        Error::new(
            self.pos,
            Context::root(),
            ErrorKind::OutOfOrder {
                item,
                after: self.state.name(),
            },
        )
    }

    fn check_word(&self, v: u64, ctx: impl Fn() -> Context) -> Result<()> {
        if v > self.word.max_value() {
            return Err(Error::invalid(
                self.pos,
                ctx(),
                format!("a value that fits a {} word", self.word),
                format!("{v:#x}"),
            ));
        }
        Ok(())
    }

    fn io(&self, e: std::io::Error, ctx: Context) -> Error {
        Error::new(self.pos, ctx, ErrorKind::Io(e))
    }

    fn put(&mut self, bytes: &[u8], ctx: impl Fn() -> Context) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| self.io(e, ctx()))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// The leading `max_pfn` (inclusive highest pfn).
    pub fn max_pfn(&mut self, value: u64) -> Result<()> {
        if self.state != State::Start {
            return Err(self.refuse("max_pfn"));
        }
        self.check_word(value, || Context::root().field("max_pfn"))?;
        let mut b = Vec::with_capacity(8);
        self.word.write(value, &mut b);
        self.put(&b, || Context::root().field("max_pfn"))?;
        self.state = State::Pages { verify: false };
        Ok(())
    }

    /// One batch: `entries` in stream order and one 4096-byte page for each
    /// entry without type bits, in the same order.
    pub fn batch(&mut self, entries: &[PfnEntry], pages: &[&[u8]]) -> Result<()> {
        if !matches!(self.state, State::Pages { .. }) {
            return Err(self.refuse("batch"));
        }
        let ctx = || Context::root().index("batch", self.batches);
        if entries.is_empty() || entries.len() > MAX_BATCH {
            return Err(Error::invalid(
                self.pos,
                ctx().field("count"),
                format!("1..={MAX_BATCH} entries"),
                entries.len().to_string(),
            ));
        }
        let with_data = entries.iter().filter(|e| e.has_data()).count();
        if pages.len() != with_data {
            return Err(Error::invalid(
                self.pos,
                ctx().field("pages"),
                format!("{with_data} pages (one per entry without type bits)"),
                pages.len().to_string(),
            ));
        }
        if let Some((i, p)) = pages.iter().enumerate().find(|(_, p)| p.len() != PAGE_SIZE) {
            return Err(Error::invalid(
                self.pos,
                ctx().index("page", i as u64),
                format!("{PAGE_SIZE} bytes"),
                p.len().to_string(),
            ));
        }
        for (i, e) in entries.iter().enumerate() {
            self.check_word(e.raw(), || ctx().index("entry", i as u64).field("pfn"))?;
        }
        let mut head = std::mem::take(&mut self.scratch);
        head.clear();
        head.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            self.word.write(e.raw(), &mut head);
        }
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(1 + pages.len());
        iov.push(IoSlice::new(&head));
        iov.extend(pages.iter().map(|p| IoSlice::new(p)));
        let total = head.len() as u64 + (pages.len() * PAGE_SIZE) as u64;
        let res = write_all_vectored(&mut self.out, &mut iov);
        drop(iov);
        self.scratch = head;
        res.map_err(|e| self.io(e, ctx()))?;
        self.pos += total;
        self.batches += 1;
        Ok(())
    }

    /// The `-1` verify marker; the batches after it are the verify resend.
    pub fn verify_marker(&mut self) -> Result<()> {
        if self.state != (State::Pages { verify: false }) {
            return Err(self.refuse("verify marker"));
        }
        self.put(&(-1i32).to_le_bytes(), || {
            Context::root().field("verify marker")
        })?;
        self.state = State::Pages { verify: true };
        Ok(())
    }

    /// The `0` terminator that ends the page section.
    pub fn end(&mut self) -> Result<()> {
        if !matches!(self.state, State::Pages { .. }) {
            return Err(self.refuse("terminator"));
        }
        self.put(&0i32.to_le_bytes(), || Context::root().field("terminator"))?;
        self.state = State::VcpuCount;
        Ok(())
    }

    /// `nr_vcpus`: exactly this many [`vcpu`](Self::vcpu) calls must follow.
    pub fn vcpu_count(&mut self, count: u32) -> Result<()> {
        if self.state != State::VcpuCount {
            return Err(self.refuse("nr_vcpus"));
        }
        self.put(&count.to_le_bytes(), || Context::root().field("nr_vcpus"))?;
        self.state = if count == 0 {
            State::HvmBlob
        } else {
            State::Vcpus { left: count }
        };
        Ok(())
    }

    /// One vCPU record (`u32 size` + the context bytes as given).
    pub fn vcpu(&mut self, context: &[u8]) -> Result<()> {
        let State::Vcpus { left } = self.state else {
            return Err(self.refuse("vcpu record"));
        };
        let len = u32::try_from(context.len()).map_err(|_| {
            Error::invalid(
                self.pos,
                Context::root().field("vcpu"),
                "a context under 4 GiB",
                context.len().to_string(),
            )
        })?;
        self.put(&len.to_le_bytes(), || Context::root().field("vcpu"))?;
        self.put(context, || Context::root().field("vcpu"))?;
        self.state = if left == 1 {
            State::HvmBlob
        } else {
            State::Vcpus { left: left - 1 }
        };
        Ok(())
    }

    /// The HVM context blob: the last item.
    pub fn hvm_blob(&mut self, blob: &[u8]) -> Result<()> {
        if self.state != State::HvmBlob {
            return Err(self.refuse("hvm blob"));
        }
        let len = u32::try_from(blob.len()).map_err(|_| {
            Error::invalid(
                self.pos,
                Context::root().field("hvm blob"),
                "a blob under 4 GiB",
                blob.len().to_string(),
            )
        })?;
        self.put(&len.to_le_bytes(), || Context::root().field("hvm blob"))?;
        self.put(blob, || Context::root().field("hvm blob"))?;
        self.state = State::Done;
        Ok(())
    }

    /// Write an item read from another stream, byte for byte.
    pub fn item(&mut self, item: &Item<'_>) -> Result<()> {
        match item {
            Item::MaxPfn { value, .. } => self.max_pfn(*value),
            Item::Batch(b) => {
                let entries: Vec<PfnEntry> = b.entries().collect();
                let pages: Vec<&[u8]> = b.pages().map(|(_, p, _)| p).collect();
                self.batch(&entries, &pages)
            }
            Item::VerifyMarker { .. } => self.verify_marker(),
            Item::End { .. } => self.end(),
            Item::VcpuCount { count, .. } => self.vcpu_count(*count),
            Item::Vcpu(v) => self.vcpu(v.bytes),
            Item::HvmBlob(h) => self.hvm_blob(h.bytes),
        }
    }

    /// True once the HVM blob has been written.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Flush and hand back the sink; refuses an unfinished stream.
    pub fn finish(mut self) -> Result<W> {
        if self.state != State::Done {
            return Err(self.refuse("the end of the stream"));
        }
        self.out.flush().map_err(|e| self.io(e, Context::root()))?;
        Ok(self.out)
    }

    /// Hand back the sink without checking completeness (for writers that
    /// abandon a stream after an error).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Reader, SliceReader};

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; PAGE_SIZE]
    }

    fn sample(word: WordSize) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), word);
        w.max_pfn(0x1FFFF).unwrap();
        let (a, b) = (page(1), page(2));
        w.batch(
            &[PfnEntry::page(0), PfnEntry::xtab(5), PfnEntry::page(0xC0)],
            &[&a, &b],
        )
        .unwrap();
        w.verify_marker().unwrap();
        w.batch(&[PfnEntry::page(0)], &[&a]).unwrap();
        w.end().unwrap();
        w.vcpu_count(1).unwrap();
        w.vcpu(&[7u8; 16]).unwrap();
        w.hvm_blob(&[9u8; 8]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn exact_bytes_64() {
        let img = sample(WordSize::W64);
        // max_pfn
        assert_eq!(&img[0..8], &0x1FFFFu64.to_le_bytes());
        // batch 0: count 3, three 8-byte words, two pages
        assert_eq!(&img[8..12], &3u32.to_le_bytes());
        assert_eq!(&img[12..20], &0u64.to_le_bytes());
        assert_eq!(&img[20..28], &0xF000_0005u64.to_le_bytes());
        assert_eq!(&img[28..36], &0xC0u64.to_le_bytes());
        assert!(img[36..36 + 4096].iter().all(|&b| b == 1));
        let p = 36 + 8192;
        assert_eq!(&img[p..p + 4], &(-1i32).to_le_bytes());
        assert_eq!(&img[p + 4..p + 8], &1u32.to_le_bytes());
        let p = p + 8 + 8 + 4096;
        assert_eq!(&img[p..p + 4], &0u32.to_le_bytes());
        assert_eq!(&img[p + 4..p + 8], &1u32.to_le_bytes());
        assert_eq!(&img[p + 8..p + 12], &16u32.to_le_bytes());
        assert_eq!(&img[p + 28..p + 32], &8u32.to_le_bytes());
        assert_eq!(img.len(), p + 40);
    }

    #[test]
    fn both_readers_round_trip_both_words() {
        for word in [WordSize::W64, WordSize::W32] {
            let img = sample(word);
            let mut w = Writer::new(Vec::new(), word);
            let mut r = SliceReader::new(&img, word, 0);
            while let Some(item) = r.next().unwrap() {
                w.item(&item).unwrap();
            }
            assert_eq!(w.finish().unwrap(), img);

            let mut w = Writer::new(Vec::new(), word);
            let mut r = Reader::new(&img[..], word, 0);
            while let Some(item) = r.next().unwrap() {
                w.item(&item).unwrap();
            }
            assert_eq!(w.finish().unwrap(), img);
        }
    }

    #[test]
    fn refuses_out_of_order() {
        let mut w = Writer::new(Vec::new(), WordSize::W64);
        let e = w.batch(&[PfnEntry::page(1)], &[&page(0)]).unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::OutOfOrder { item: "batch", .. }),
            "{e}"
        );
        assert!(w.into_inner().is_empty(), "nothing written on refusal");

        let mut w = Writer::new(Vec::new(), WordSize::W64);
        w.max_pfn(1).unwrap();
        w.end().unwrap();
        assert!(w.verify_marker().is_err());
        assert!(w.hvm_blob(&[]).is_err());
        w.vcpu_count(2).unwrap();
        w.vcpu(&[0; 4]).unwrap();
        assert!(w.hvm_blob(&[]).is_err(), "one vcpu record still owed");
        w.vcpu(&[0; 4]).unwrap();
        assert!(w.vcpu(&[0; 4]).is_err());
        w.hvm_blob(&[]).unwrap();
        assert!(w.finish().is_ok());
    }

    #[test]
    fn refuses_bad_batches() {
        let mut w = Writer::new(Vec::new(), WordSize::W32);
        w.max_pfn(10).unwrap();
        assert!(w.batch(&[], &[]).is_err());
        assert!(w.batch(&[PfnEntry::page(1)], &[]).is_err(), "page missing");
        assert!(
            w.batch(&[PfnEntry::page(1)], &[&[0u8; 10]]).is_err(),
            "short page"
        );
        assert!(
            w.batch(&[PfnEntry::page(1 << 33)], &[&page(0)]).is_err(),
            "pfn too wide"
        );
        let many = vec![PfnEntry::xtab(1); MAX_BATCH + 1];
        assert!(w.batch(&many, &[]).is_err());
        assert!(w.max_pfn(1).is_err());
        assert!(Writer::new(Vec::new(), WordSize::W32)
            .max_pfn(1 << 32)
            .is_err());
    }
}
