//! `hvm-inspect diff A B`: what a restore of A would leave different from a
//! restore of B — final memory by pfn, vCPU registers field by field, HVM
//! records field by field.
//!
//! Memory: the two page indexes (`hvm_format::index`, built with read(2)),
//! merged in pfn order, pages read with pread(2) and compared: through a
//! map, both files would become resident.

use std::collections::BTreeMap;

use serde::Serialize;

use hvm_format::hvm::{FieldValue, HvmBlob};
use hvm_format::image::OpenOptions;
use hvm_format::index::PageIndex;
use hvm_format::vcpu::VcpuContext;
use hvm_format::{WordSize, PAGE_SIZE};

use crate::input::{Input, InspectError, Progress, Spooled};
use crate::report::index_file;

/// Consecutive pfns `first..=last`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PfnRange {
    /// First pfn.
    pub first: u64,
    /// Last pfn (inclusive).
    pub last: u64,
}

/// A set of pfns, counted and coalesced into ranges.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PfnRanges {
    /// Number of pfns.
    pub pages: u64,
    /// The pfns as ascending ranges.
    pub ranges: Vec<PfnRange>,
}

impl PfnRanges {
    /// Add a pfn greater than every pfn added before.
    fn push(&mut self, pfn: u64) {
        self.pages += 1;
        match self.ranges.last_mut() {
            Some(r) if r.last.checked_add(1) == Some(pfn) => r.last = pfn,
            _ => self.ranges.push(PfnRange {
                first: pfn,
                last: pfn,
            }),
        }
    }
}

/// Memory differences.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MemoryDiff {
    /// Pfns with a final copy in A only.
    pub only_a: PfnRanges,
    /// Pfns with a final copy in B only.
    pub only_b: PfnRanges,
    /// Pfns in both whose final copies differ.
    pub changed: PfnRanges,
    /// Pfns in both with equal final copies.
    pub same: u64,
}

/// One field that differs; a side without the field is `null`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldDiff {
    /// Field name.
    pub field: String,
    /// Value in A.
    pub a: Option<FieldValue>,
    /// Value in B.
    pub b: Option<FieldValue>,
}

/// A vCPU that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VcpuDiff {
    /// Record number.
    pub index: u32,
    /// `"a"` or `"b"` when only one image has this vCPU.
    pub only_in: Option<&'static str>,
    /// Differing fields.
    pub fields: Vec<FieldDiff>,
}

/// An HVM record that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordDiff {
    /// Type name.
    pub name: &'static str,
    /// Type code.
    pub typecode: u16,
    /// Instance.
    pub instance: u16,
    /// `"a"` or `"b"` when only one image has it.
    pub only_in: Option<&'static str>,
    /// Payload length in A.
    pub length_a: Option<u64>,
    /// Payload length in B.
    pub length_b: Option<u64>,
    /// Differing fields.
    pub fields: Vec<FieldDiff>,
}

/// `hvm-inspect diff`.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// Image A as named.
    pub a: String,
    /// Image B as named.
    pub b: String,
    /// True when nothing differs.
    pub same: bool,
    /// Memory.
    pub memory: MemoryDiff,
    /// vCPU counts.
    pub vcpus_a: u32,
    /// See `vcpus_a`.
    pub vcpus_b: u32,
    /// vCPUs that differ.
    pub vcpus: Vec<VcpuDiff>,
    /// HVM records in A (END included).
    pub hvm_records_a: u64,
    /// See `hvm_records_a`.
    pub hvm_records_b: u64,
    /// HVM records that differ.
    pub hvm: Vec<RecordDiff>,
    /// Was either blob unparseable? Then it is compared as bytes.
    pub hvm_bytes_differ: bool,
}

fn diff_fields(a: &[hvm_format::hvm::Field], b: &[hvm_format::hvm::Field]) -> Vec<FieldDiff> {
    let bmap: BTreeMap<&str, &FieldValue> = b.iter().map(|f| (f.name.as_str(), &f.value)).collect();
    let amap: BTreeMap<&str, &FieldValue> = a.iter().map(|f| (f.name.as_str(), &f.value)).collect();
    let mut out: Vec<FieldDiff> = a
        .iter()
        .filter(|f| bmap.get(f.name.as_str()) != Some(&&f.value))
        .map(|f| FieldDiff {
            field: f.name.clone(),
            a: Some(f.value.clone()),
            b: bmap.get(f.name.as_str()).map(|v| (*v).clone()),
        })
        .collect();
    out.extend(
        b.iter()
            .filter(|f| !amap.contains_key(f.name.as_str()))
            .map(|f| FieldDiff {
                field: f.name.clone(),
                a: None,
                b: Some(f.value.clone()),
            }),
    );
    out
}

fn memory_diff(
    ia: &PageIndex,
    fa: &Spooled,
    ib: &PageIndex,
    fb: &Spooled,
) -> Result<MemoryDiff, InspectError> {
    let (mut pa, mut pb) = (vec![0u8; PAGE_SIZE], vec![0u8; PAGE_SIZE]);
    let io = |f: &Spooled| {
        let path = f.name().to_string();
        move |source| InspectError::Io { path, source }
    };
    let mut m = MemoryDiff::default();
    let (mut i, mut j) = (0, 0);
    let (ca, cb) = (&ia.finals, &ib.finals);
    while i < ca.len() || j < cb.len() {
        match (ca.get(i), cb.get(j)) {
            (Some(x), Some(y)) if x.pfn == y.pfn => {
                fa.read_at(x.offset, &mut pa).map_err(io(fa))?;
                fb.read_at(y.offset, &mut pb).map_err(io(fb))?;
                if pa == pb {
                    m.same += 1;
                } else {
                    m.changed.push(x.pfn);
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.pfn < y.pfn => {
                m.only_a.push(x.pfn);
                i += 1;
            }
            (Some(_), Some(y)) => {
                m.only_b.push(y.pfn);
                j += 1;
            }
            (Some(x), None) => {
                m.only_a.push(x.pfn);
                i += 1;
            }
            (None, Some(y)) => {
                m.only_b.push(y.pfn);
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(m)
}

fn vcpu_fields(word: WordSize, bytes: &[u8]) -> Vec<hvm_format::hvm::Field> {
    match VcpuContext::parse_as(word, bytes) {
        Ok(c) => c.fields(),
        // A context of a foreign size: compare it as one byte field.
        Err(_) => vec![hvm_format::hvm::Field::new(
            "raw",
            FieldValue::Bytes(bytes.to_vec()),
        )],
    }
}

type RecordKey = (u16, u16, usize);

fn record_map(blob: &[u8]) -> Option<BTreeMap<RecordKey, (u64, Vec<hvm_format::hvm::Field>)>> {
    let b = HvmBlob::parse(blob).ok()?;
    let mut seen: BTreeMap<(u16, u16), usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for r in &b.records {
        let n = seen.entry((r.typecode, r.instance)).or_insert(0);
        out.insert(
            (r.typecode, r.instance, *n),
            (r.payload.len() as u64, r.decode().fields()),
        );
        *n += 1;
    }
    Some(out)
}

/// Compare two images. At most one of them may be standard input.
pub fn diff(
    a: Input,
    b: Input,
    opts: OpenOptions,
    progress: Progress<'_>,
) -> Result<DiffReport, InspectError> {
    if a.is_stdin() && b.is_stdin() {
        return Err(InspectError::Usage(
            "diff: at most one of A and B may be - (standard input)".into(),
        ));
    }
    let fa = a.into_file()?;
    let fb = b.into_file()?;
    let (wa, va) = index_file(&fa, opts, progress)?;
    let ia = va.index.finish();
    let (wb, vb) = index_file(&fb, opts, progress)?;
    let ib = vb.index.finish();
    let memory = memory_diff(&ia, &fa, &ib, &fb)?;
    drop((ia, ib));

    let mut vcpus = Vec::new();
    let n = va.vcpus.len().max(vb.vcpus.len());
    for k in 0..n {
        let index = k as u32;
        match (va.vcpus.get(k), vb.vcpus.get(k)) {
            (Some((_, x)), Some((_, y))) => {
                let fields = diff_fields(
                    &vcpu_fields(wa.info.word(), x),
                    &vcpu_fields(wb.info.word(), y),
                );
                if !fields.is_empty() {
                    vcpus.push(VcpuDiff {
                        index,
                        only_in: None,
                        fields,
                    });
                }
            }
            (Some(_), None) => vcpus.push(VcpuDiff {
                index,
                only_in: Some("a"),
                fields: Vec::new(),
            }),
            (None, Some(_)) => vcpus.push(VcpuDiff {
                index,
                only_in: Some("b"),
                fields: Vec::new(),
            }),
            (None, None) => {}
        }
    }

    let blob_a = va.hvm.as_ref().map(|h| h.1.as_slice()).unwrap_or(&[]);
    let blob_b = vb.hvm.as_ref().map(|h| h.1.as_slice()).unwrap_or(&[]);
    let (mut hvm, mut hvm_bytes_differ, mut ra, mut rb) = (Vec::new(), false, 0, 0);
    match (record_map(blob_a), record_map(blob_b)) {
        (Some(x), Some(y)) => {
            ra = x.len() as u64;
            rb = y.len() as u64;
            let keys: std::collections::BTreeSet<RecordKey> =
                x.keys().chain(y.keys()).copied().collect();
            for key in keys {
                let (code, instance, _) = key;
                let name = hvm_format::hvm::type_name(code).unwrap_or("UNKNOWN");
                let d = match (x.get(&key), y.get(&key)) {
                    (Some((la, fa)), Some((lb, fb))) => {
                        let fields = diff_fields(fa, fb);
                        (!fields.is_empty() || la != lb).then_some(RecordDiff {
                            name,
                            typecode: code,
                            instance,
                            only_in: None,
                            length_a: Some(*la),
                            length_b: Some(*lb),
                            fields,
                        })
                    }
                    (Some((la, _)), None) => Some(RecordDiff {
                        name,
                        typecode: code,
                        instance,
                        only_in: Some("a"),
                        length_a: Some(*la),
                        length_b: None,
                        fields: Vec::new(),
                    }),
                    (None, Some((lb, _))) => Some(RecordDiff {
                        name,
                        typecode: code,
                        instance,
                        only_in: Some("b"),
                        length_a: None,
                        length_b: Some(*lb),
                        fields: Vec::new(),
                    }),
                    (None, None) => None,
                };
                hvm.extend(d);
            }
        }
        _ => hvm_bytes_differ = blob_a != blob_b,
    }

    let same = memory.only_a.pages == 0
        && memory.only_b.pages == 0
        && memory.changed.pages == 0
        && vcpus.is_empty()
        && hvm.is_empty()
        && !hvm_bytes_differ;
    Ok(DiffReport {
        a: fa.name().to_string(),
        b: fb.name().to_string(),
        same,
        memory,
        vcpus_a: va.vcpus.len() as u32,
        vcpus_b: vb.vcpus.len() as u32,
        vcpus,
        hvm_records_a: ra,
        hvm_records_b: rb,
        hvm,
        hvm_bytes_differ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfn_ranges_coalesce_consecutive_pfns() {
        let mut r = PfnRanges::default();
        for p in [1, 2, 3, 5, 7, 8, u64::MAX] {
            r.push(p);
        }
        let got: Vec<(u64, u64)> = r.ranges.iter().map(|x| (x.first, x.last)).collect();
        assert_eq!(got, vec![(1, 3), (5, 5), (7, 8), (u64::MAX, u64::MAX)]);
        assert_eq!(r.pages, 7);
    }
}
