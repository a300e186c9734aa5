//! Descriptor framing of the blob (docs/format.md §5.1): `u16 typecode,
//! u16 instance, u32 length`, payload, no padding, END (typecode 0) last.
//! Parsing borrows payloads from the input; bytes after END are kept as a
//! trailer so that `encode(parse(x)) == x`.

use crate::bytes::le;
use crate::diag::{slice_at, Context, Error, ErrorKind, Result};

use super::record::{code, type_name, HvmRecord};

/// Size of `struct hvm_save_descriptor`.
pub(crate) const DESCRIPTOR_LEN: usize = 8;

/// A record as it sits in the blob, payload borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Offset of the descriptor from the start of the blob.
    pub offset: u64,
    /// The descriptor's type code (see [`code`](super::code)).
    pub typecode: u16,
    /// The descriptor's instance: the vCPU of a per-vCPU record, else 0.
    pub instance: u16,
    /// The payload bytes, `length` of them.
    pub payload: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// Offset of the first payload byte within the blob.
    pub fn payload_offset(&self) -> u64 {
        self.offset + DESCRIPTOR_LEN as u64
    }

    /// Xen's name for the type code, `"UNKNOWN"` for undefined codes.
    pub fn name(&self) -> &'static str {
        type_name(self.typecode).unwrap_or("UNKNOWN")
    }

    /// Decode the payload by (typecode, length); never fails.
    pub fn decode(&self) -> HvmRecord {
        HvmRecord::decode(self.typecode, self.instance, self.payload)
    }

    /// Copy into the owned form.
    pub fn to_owned_record(&self) -> OwnedRecord {
        OwnedRecord {
            typecode: self.typecode,
            instance: self.instance,
            payload: self.payload.to_vec(),
        }
    }
}

/// A raw record that owns its payload, for writers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// The descriptor's type code (see [`code`](super::code)).
    pub typecode: u16,
    /// The descriptor's instance: the vCPU of a per-vCPU record, else 0.
    pub instance: u16,
    /// The payload bytes, `length` of them.
    pub payload: Vec<u8>,
}

impl OwnedRecord {
    /// Append descriptor and payload. Payloads longer than `u32::MAX` cannot
    /// be framed; the length is saturated (no writer produces such a record).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_raw(self.typecode, self.instance, &self.payload, out);
    }

    /// Decode the payload by (typecode, length); never fails.
    pub fn decode(&self) -> HvmRecord {
        HvmRecord::decode(self.typecode, self.instance, &self.payload)
    }
}

impl From<&HvmRecord> for OwnedRecord {
    fn from(r: &HvmRecord) -> Self {
        OwnedRecord {
            typecode: r.typecode(),
            instance: r.instance,
            payload: r.body.encode(),
        }
    }
}

pub(crate) fn encode_raw(typecode: u16, instance: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&typecode.to_le_bytes());
    out.extend_from_slice(&instance.to_le_bytes());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A parsed blob: the records in file order, END included as the last one,
/// and whatever followed END.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HvmBlob<'a> {
    /// Every record up to and including END, in blob order.
    pub records: Vec<RawRecord<'a>>,
    /// Bytes after END (Xen ignores them; kept for exact re-encoding).
    pub trailer: &'a [u8],
}

/// The context path of record `index` (`hvm record 3 › CPU`).
pub(crate) fn record_context(index: usize, typecode: u16) -> Context {
    Context::root()
        .index("hvm record", index as u64)
        .field(type_name(typecode).unwrap_or("UNKNOWN"))
}

impl<'a> HvmBlob<'a> {
    /// Parse the framing of a whole blob. Offsets in errors are relative to
    /// the blob's first byte; callers add the blob's file offset with
    /// [`Error::rebase`].
    ///
    /// Errors: a length larger than what is left ([`ErrorKind::Oversized`],
    /// at the length field, before any allocation) and a blob that ends
    /// before END (truncation at the missing descriptor).
    pub fn parse(blob: &'a [u8]) -> Result<Self> {
        let mut records = Vec::new();
        let mut pos = 0usize;
        loop {
            let index = records.len();
            // `pos` only advances over records inside `blob`; an empty rest
            // is reported below as the missing END descriptor at `pos`.
            let rest = blob.get(pos..).unwrap_or(&[]);
            let Some(desc) = rest.get(..DESCRIPTOR_LEN) else {
                return Err(Error::truncated(
                    pos as u64,
                    Context::root()
                        .index("hvm record", index as u64)
                        .field("descriptor (END missing)"),
                    (DESCRIPTOR_LEN - rest.len()) as u64,
                    rest.len() as u64,
                ));
            };
            // `desc` is the 8-byte descriptor: every field is in range.
            let typecode: u16 = le(desc, 0).unwrap_or_default();
            let instance: u16 = le(desc, 2).unwrap_or_default();
            let length: u32 = le(desc, 4).unwrap_or_default();
            let remaining = rest.len() - DESCRIPTOR_LEN;
            if u64::from(length) > remaining as u64 {
                return Err(Error::new(
                    (pos + 4) as u64,
                    record_context(index, typecode).field("length"),
                    ErrorKind::Oversized {
                        what: "hvm record payload",
                        claimed: u64::from(length),
                        remaining: remaining as u64,
                    },
                ));
            }
            let end = DESCRIPTOR_LEN + length as usize;
            let payload = slice_at(rest, DESCRIPTOR_LEN, end, pos as u64, || {
                record_context(index, typecode).field("payload")
            })?;
            records.push(RawRecord {
                offset: pos as u64,
                typecode,
                instance,
                payload,
            });
            pos += end;
            if typecode == code::END {
                return Ok(HvmBlob {
                    records,
                    // The END record lay inside `blob`, so `pos <= blob.len()`.
                    trailer: blob.get(pos..).unwrap_or(&[]),
                });
            }
        }
    }

    /// Re-encode: the exact input bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for r in &self.records {
            encode_raw(r.typecode, r.instance, r.payload, &mut out);
        }
        out.extend_from_slice(self.trailer);
        out
    }

    /// Length of [`encode`](Self::encode)'s output.
    pub(crate) fn encoded_len(&self) -> usize {
        self.records
            .iter()
            .map(|r| DESCRIPTOR_LEN + r.payload.len())
            .sum::<usize>()
            + self.trailer.len()
    }

    /// The first record (HEADER in any blob Xen wrote).
    pub fn first(&self) -> Option<&RawRecord<'a>> {
        self.records.first()
    }

    /// The records before END.
    pub fn body(&self) -> &[RawRecord<'a>] {
        match self.records.split_last() {
            Some((last, rest)) if last.typecode == code::END => rest,
            _ => &self.records,
        }
    }

    /// Every record decoded (END included), in blob order.
    pub fn decode_all(&self) -> Vec<HvmRecord> {
        self.records.iter().map(RawRecord::decode).collect()
    }

    /// Records of one type, in blob order.
    pub fn of_type(&self, typecode: u16) -> impl Iterator<Item = &RawRecord<'a>> {
        self.records.iter().filter(move |r| r.typecode == typecode)
    }
}

/// Encode records in the given order, then `trailer`. No END is added: pass
/// it yourself, or use [`super::BlobBuilder`] for Xen's order.
pub fn encode_records<'r>(
    records: impl IntoIterator<Item = &'r HvmRecord>,
    trailer: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode_into(&mut out);
    }
    out.extend_from_slice(trailer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: u16, i: u16, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_raw(t, i, p, &mut v);
        v
    }

    #[test]
    fn parses_records_offsets_and_trailer() {
        let mut b = rec(1, 0, &[1; 24]);
        b.extend(rec(11, 0, &[2; 15]));
        b.extend(rec(3, 1, &[3; 8]));
        b.extend(rec(0, 0, &[]));
        b.extend([0xAA, 0xBB]);
        let blob = HvmBlob::parse(&b).unwrap();
        let offs: Vec<u64> = blob.records.iter().map(|r| r.offset).collect();
        assert_eq!(offs, vec![0, 32, 55, 71]);
        assert_eq!(blob.records[2].instance, 1);
        assert_eq!(blob.records[1].payload, &[2; 15]);
        assert_eq!(blob.trailer, &[0xAA, 0xBB]);
        assert_eq!(blob.body().len(), 3);
        assert_eq!(blob.encode(), b);
        assert_eq!(blob.encoded_len(), b.len());
    }

    #[test]
    fn end_with_payload_round_trips() {
        let mut b = rec(1, 0, &[0; 24]);
        b.extend(rec(0, 7, &[9, 9, 9]));
        let blob = HvmBlob::parse(&b).unwrap();
        assert_eq!(blob.records[1].payload, &[9, 9, 9]);
        assert_eq!(blob.encode(), b);
    }

    #[test]
    fn hostile_length_fails_fast_at_length_field() {
        let mut b = rec(1, 0, &[0; 24]);
        b.extend(rec(2, 0, &[0; 4]));
        b.extend(rec(2, 0, &[0; 4]));
        b.extend(rec(2, 1, &[0; 4]));
        // Fourth record (index 3), a CPU, claims 4 GiB.
        let at = b.len() - 12;
        b[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = HvmBlob::parse(&b).unwrap_err();
        assert_eq!(e.offset, at as u64 + 4);
        assert_eq!(e.context.to_string(), "hvm record 3 › CPU › length");
        match e.kind {
            ErrorKind::Oversized {
                claimed, remaining, ..
            } => {
                assert_eq!(claimed, 0xFFFF_FFFF);
                assert_eq!(remaining, 4);
            }
            k => panic!("unexpected {k:?}"),
        }
        assert_eq!(e.rebase(1000).offset, at as u64 + 1004);
    }

    #[test]
    fn missing_end_is_truncation() {
        let b = rec(1, 0, &[0; 24]);
        let e = HvmBlob::parse(&b).unwrap_err();
        assert!(e.is_truncation());
        assert_eq!(e.offset, 32);
        let mut short = b.clone();
        short.extend([0, 0, 0]);
        let e = HvmBlob::parse(&short).unwrap_err();
        assert!(e.is_truncation());
        assert_eq!(e.offset, 32);
        assert!(HvmBlob::parse(&[]).unwrap_err().is_truncation());
    }
}
