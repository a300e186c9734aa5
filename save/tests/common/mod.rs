//! Helpers shared by the integration tests: replaying an image the way the
//! seed restorer does, and digesting the simulated guest independently.
#![allow(dead_code)]

use std::collections::BTreeMap;

use hvm_format::digest::{DigestBuilder, MemoryDigest};
use hvm_format::stream::{Item, SliceReader};
use hvm_format::WordSize;
use hvm_save::backend::sim::SimDomain;

/// What a replay of an image yields.
pub struct Replay {
    pub max_pfn: u64,
    /// Final copy of every pfn sent with data (later copies win).
    pub memory: BTreeMap<u64, Vec<u8>>,
    /// Pages per pass boundary are not visible in the stream; batches are.
    pub batches: usize,
    pub verify_batches: usize,
    pub xtab: BTreeMap<u64, ()>,
    pub vcpus: Vec<Vec<u8>>,
    pub hvm_blob: Vec<u8>,
}

/// Replay a bare stream. Verify-pass pages must equal what was restored.
pub fn replay(image: &[u8]) -> Replay {
    let mut r = SliceReader::new(image, WordSize::W64, 0);
    let mut out = Replay {
        max_pfn: 0,
        memory: BTreeMap::new(),
        batches: 0,
        verify_batches: 0,
        xtab: BTreeMap::new(),
        vcpus: Vec::new(),
        hvm_blob: Vec::new(),
    };
    while let Some(item) = r.next().expect("image parses") {
        match item {
            Item::MaxPfn { value, .. } => out.max_pfn = value,
            Item::Batch(b) => {
                for e in b.entries().filter(|e| !e.has_data()) {
                    out.xtab.insert(e.pfn().0, ());
                }
                if b.verify {
                    out.verify_batches += 1;
                    for (e, page, _) in b.pages() {
                        assert_eq!(
                            out.memory.get(&e.pfn().0).map(|v| v.as_slice()),
                            Some(page),
                            "verify copy of {} differs",
                            e.pfn()
                        );
                    }
                } else {
                    out.batches += 1;
                    for (e, page, _) in b.pages() {
                        out.memory.insert(e.pfn().0, page.to_vec());
                    }
                }
            }
            Item::Vcpu(v) => out.vcpus.push(v.bytes.to_vec()),
            Item::HvmBlob(h) => out.hvm_blob = h.bytes.to_vec(),
            _ => {}
        }
    }
    assert!(r.is_done(), "stream complete");
    out
}

/// Digest of replayed memory.
pub fn replay_digest(r: &Replay) -> MemoryDigest {
    let mut b = DigestBuilder::new();
    for (pfn, page) in &r.memory {
        b.page(*pfn, page);
    }
    b.finish().expect("ascending")
}

/// Digest of the sim guest's memory as it is now: every RAM page that maps,
/// magic pages excluded, computed without the saver's code.
pub fn sim_digest(sim: &SimDomain) -> MemoryDigest {
    let m = sim.magic();
    let mut b = DigestBuilder::new();
    for pfn in 0..=sim.top_pfn() {
        if pfn == m.store || pfn == m.ioreq || pfn == m.bufioreq || sim.is_unmappable(pfn) {
            continue;
        }
        if let Some(p) = sim.page(pfn) {
            b.page(pfn, p);
        }
    }
    b.finish().expect("ascending")
}

/// `P`'s decisions, but sending during every suspend wait: to exercise
/// [`hvm_save::saver::Phase::Suspending`] on any workload.
pub struct SendWhileSuspending<P>(pub P);

impl<P: hvm_save::Policy> hvm_save::Policy for SendWhileSuspending<P> {
    fn name(&self) -> &'static str {
        "send-while-suspending"
    }
    fn wants_dirty_count(&self) -> bool {
        self.0.wants_dirty_count()
    }
    fn after_pass(&mut self, report: &hvm_save::policy::PassReport) -> hvm_save::policy::Decision {
        self.0.after_pass(report)
    }
    fn send_while_suspending(&self) -> bool {
        true
    }
}
