//! The replay: stream items in, the final memory and findings out, with the
//! seed restorer's semantics (docs/format.md §2.1):
//!
//! * normal batches copy each page into guest memory; a later copy of a pfn
//!   wins. Guest memory is not materialised: the [`PageTable`] records where
//!   each copy's bytes are (the input, or the spool of a pipe), so memory
//!   follows the number of page copies, not the guest's size;
//! * after the `-1` marker, pages are compared with what was restored (a
//!   pfn never restored reads as the zero page the restorer populated), and
//!   every mismatching pfn is reported: a page the dirty log missed;
//! * after the `0` terminator the restorer zeroes its three magic pages
//!   (ioreq, store, buffered ioreq at `shared_page_nr`, -1, -2).
//!
//! Checks are [`hvm_format::rules::StreamChecker`]'s; this module only adds
//! what needs guest memory (the verify comparison).

use hvm_format::digest::{vcpu_digest, Sha256Digest};
use hvm_format::error::Context;
use hvm_format::image::Tail;
use hvm_format::index::{Pass, PassTracker};
use hvm_format::rules::{CheckOptions, Finding, StreamChecker, Verdict};
use hvm_format::stream::{Batch, Item};
use hvm_format::{Error, WordSize};

use hvm_format::PAGE_SIZE;

use crate::memory::{FinalMemory, PageStore, PageTable, StoreError};

/// Verify-pass mismatches described in full before the rest are only listed
/// by pfn.
pub const VERIFY_DETAIL_CAP: usize = 64;
/// Rule id of a verify-pass page that differs from the restored page.
pub const RULE_VERIFY_MISMATCH: &str = "restore.verify.mismatch";

/// Counters of what the replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayStats {
    /// Batches read (verify batches included).
    pub batches: u64,
    /// Pages copied into guest memory by normal batches (repeats included).
    pub pages_copied: u64,
    /// Distinct pfns restored.
    pub pfns_restored: u64,
    /// Entries with type bits (XTAB…): no data, skipped by the restorer.
    pub typed_entries: u64,
    /// Pages for pfns outside the configured memory (not stored).
    pub pages_outside: u64,
    /// Restored magic pages the restorer zeroed after loading.
    pub magic_pages_zeroed: Vec<u64>,
}

/// One verify-pass page that differs from what was restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VerifyMismatch {
    /// The pfn.
    pub pfn: u64,
    /// File offset of the verify copy.
    pub offset: u64,
    /// First differing byte within the page.
    pub first_difference: usize,
    /// False when no normal batch restored the pfn at all.
    pub restored: bool,
}

/// The verify pass (the seed's `-1` resend) compared with guest memory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// The stream has a verify pass.
    pub present: bool,
    /// Pages compared.
    pub pages_compared: u64,
    /// Every mismatching pfn, ascending, without repeats.
    pub mismatching_pfns: Vec<u64>,
    /// The first [`VERIFY_DETAIL_CAP`] mismatches in stream order.
    pub mismatches: Vec<VerifyMismatch>,
}

/// Replays one image's items into a page table.
pub struct Replayer<'a> {
    checker: StreamChecker,
    store: PageStore<'a>,
    table: PageTable,
    /// Pfns `0..pages` are restorable (`None`: no `max_pfn` yet).
    pages: Option<u64>,
    buf: Box<[u8; PAGE_SIZE]>,
    passes: PassTracker,
    stats: ReplayStats,
    verify: VerifyReport,
    verify_findings: Vec<Finding>,
    vcpus: Vec<Sha256Digest>,
    hvm_blob: Option<Sha256Digest>,
    max_pfn: Option<u64>,
}

/// Everything a finished replay knows.
pub struct Replayed<'a> {
    /// The rule verdict (2007 restorer and current Xen).
    pub verdict: Verdict,
    /// Guest memory as restored (`None`: the stream ended before `max_pfn`).
    pub memory: Option<FinalMemory<'a>>,
    /// Counters.
    pub stats: ReplayStats,
    /// Inferred pre-copy passes.
    pub passes: Vec<Pass>,
    /// The verify pass as a pass.
    pub verify_pass: Option<Pass>,
    /// The verify comparison.
    pub verify: VerifyReport,
    /// Findings of the verify comparison.
    pub verify_findings: Vec<Finding>,
    /// Digests of the vCPU contexts, in record order.
    pub vcpus: Vec<Sha256Digest>,
    /// Digest of the HVM blob.
    pub hvm_blob: Option<Sha256Digest>,
    /// The stream's `max_pfn`.
    pub max_pfn: Option<u64>,
}

impl<'a> Replayer<'a> {
    /// A replayer for a stream of word size `word` whose page bytes are kept
    /// in `store`.
    pub fn new(
        word: WordSize,
        opts: CheckOptions,
        config_memory_mib: Option<u64>,
        store: PageStore<'a>,
    ) -> Self {
        Replayer {
            checker: StreamChecker::new(word, opts, config_memory_mib),
            store,
            table: PageTable::new(),
            pages: None,
            buf: Box::new([0; PAGE_SIZE]),
            passes: PassTracker::default(),
            stats: ReplayStats::default(),
            verify: VerifyReport::default(),
            verify_findings: Vec::new(),
            vcpus: Vec::new(),
            hvm_blob: None,
            max_pfn: None,
        }
    }

    /// The reader failed: nothing after `e` can be followed.
    pub fn structure_error(&mut self, e: &Error) {
        self.checker.structure_error(e);
    }

    /// The restorable pfns once the configured size is known: what the
    /// restorer's memory map covers, nothing allocated for it.
    fn set_pages(&mut self) {
        let pages = self
            .checker
            .layout()
            .map_or(0, |l| l.max_pfn.saturating_add(1));
        self.pages = Some(pages);
    }

    /// Replay one item.
    pub fn item(&mut self, item: &Item<'_>) -> Result<(), StoreError> {
        self.checker.item(item);
        match item {
            Item::MaxPfn { value, .. } => {
                self.max_pfn = Some(*value);
                self.passes = PassTracker::new(Some(*value));
                self.set_pages();
            }
            Item::Batch(b) => self.batch(b)?,
            Item::End { .. } => self.zero_magic_pages(),
            Item::Vcpu(v) => self.vcpus.push(vcpu_digest(v.bytes)),
            Item::HvmBlob(h) => self.hvm_blob = Some(vcpu_digest(h.bytes)),
            Item::VerifyMarker { .. } | Item::VcpuCount { .. } => {}
        }
        Ok(())
    }

    fn batch(&mut self, b: &Batch<'_>) -> Result<(), StoreError> {
        self.passes.batch(b);
        self.stats.batches += 1;
        self.stats.typed_entries += (b.count() - b.page_count()) as u64;
        let Some(pages) = self.pages else {
            return Ok(()); // unreachable: the grammar puts max_pfn first
        };
        if !b.verify {
            for (e, page, offset) in b.pages() {
                let pfn = e.pfn().0;
                if pfn < pages && page.len() == PAGE_SIZE {
                    let at = self.store.keep(pfn, offset, page)?;
                    self.table.record(pfn, at);
                    self.stats.pages_copied += 1;
                } else {
                    self.stats.pages_outside += 1;
                }
            }
            return Ok(());
        }
        self.verify.present = true;
        for (k, (e, page, offset)) in b.pages().enumerate() {
            let pfn = e.pfn().0;
            if pfn >= pages {
                self.stats.pages_outside += 1;
                continue;
            }
            self.verify.pages_compared += 1;
            let restored = self.table.find(pfn);
            let have: &[u8] = match restored {
                Some(_) if self.table.is_zeroed(pfn) => &[0; PAGE_SIZE],
                Some(at) => self.store.fetch(pfn, at, &mut self.buf)?,
                None => &[0; PAGE_SIZE],
            };
            if have == page {
                continue;
            }
            let first = have.iter().zip(page).position(|(a, b)| a != b).unwrap_or(0);
            let restored = restored.is_some();
            self.verify.mismatching_pfns.push(pfn);
            if self.verify.mismatches.len() < VERIFY_DETAIL_CAP {
                self.verify.mismatches.push(VerifyMismatch {
                    pfn,
                    offset,
                    first_difference: first,
                    restored,
                });
                let entry = b
                    .entries()
                    .enumerate()
                    .filter(|(_, e)| e.has_data())
                    .nth(k)
                    .map_or(0, |(i, _)| i as u64);
                self.verify_findings.push(Finding::error(
                    RULE_VERIFY_MISMATCH,
                    offset,
                    Context::root()
                        .index("batch", b.index)
                        .index("entry", entry)
                        .field("page"),
                    format!(
                        "the verify copy of pfn {pfn:#x} differs from the restored page at byte {first}{}: the dirty log missed it",
                        if restored { "" } else { " (pfn never restored: zero page)" }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn zero_magic_pages(&mut self) {
        let (Some(layout), Some(_)) = (self.checker.layout(), self.pages) else {
            return;
        };
        let s = layout.shared_page_nr;
        for pfn in [s, s.wrapping_sub(1), s.wrapping_sub(2)] {
            if self.table.zero_if_restored(pfn) {
                self.stats.magic_pages_zeroed.push(pfn);
            }
        }
    }

    /// Check what follows the stream.
    pub fn tail(&mut self, tail: &Tail) {
        self.checker.tail(tail);
    }

    /// Finish: the verdict and the restored memory.
    pub fn finish(mut self) -> Result<Replayed<'a>, StoreError> {
        self.verify.mismatching_pfns.sort_unstable();
        self.verify.mismatching_pfns.dedup();
        self.stats.pfns_restored = self.table.restored();
        let memory = match self.pages {
            Some(_) => Some(FinalMemory::new(self.table, self.store.finish()?)),
            None => None,
        };
        Ok(Replayed {
            verdict: self.checker.finish(),
            memory,
            stats: self.stats,
            passes: self.passes.passes,
            verify_pass: self.passes.verify,
            verify: self.verify,
            verify_findings: self.verify_findings,
            vcpus: self.vcpus,
            hvm_blob: self.hvm_blob,
            max_pfn: self.max_pfn,
        })
    }
}
