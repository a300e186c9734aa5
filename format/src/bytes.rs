//! Raw bytes to values: the one place the crate turns bytes into integers
//! and fixed-layout structs (and back), the one read-fully loop and its
//! write-side twin.
//!
//! Three tools, for three kinds of caller:
//! * [`le`] / [`be`]: an integer at an offset of a slice, `None` past its
//!   end, for the checks that only look (detection, summaries);
//! * [`ByteReader`]: a cursor that names the field and file offset of a
//!   short read, for parsers that report errors;
//! * [`decode`] / [`encode`]: binrw-derived structs, for whole records.
//!
//! [`read_full`] is the loop every reader of a `Read` uses: it retries
//! interrupted reads and says how much arrived when the input ends early.
//!
//! Part of the lowest layer with [`crate::diag`]: it uses nothing else
//! from the crate.

use std::io::{self, Cursor, IoSlice, Read, Write};

use binrw::{BinRead, BinWrite, Endian};

use crate::diag::{Context, Error, ErrorKind, Result};

/// A fixed-size integer as stored in an image.
pub(crate) trait Int: Copy {
    /// Its bytes, as many as the integer has.
    type Raw: Default + AsRef<[u8]> + AsMut<[u8]>;
    /// From little-endian bytes.
    fn from_le_raw(raw: Self::Raw) -> Self;
    /// From big-endian bytes (xend's config length, the QEVM file).
    fn from_be_raw(raw: Self::Raw) -> Self;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl Int for $t {
            type Raw = [u8; std::mem::size_of::<$t>()];
            fn from_le_raw(raw: Self::Raw) -> Self {
                <$t>::from_le_bytes(raw)
            }
            fn from_be_raw(raw: Self::Raw) -> Self {
                <$t>::from_be_bytes(raw)
            }
        }
    )*};
}
int!(u16, u32, u64, i32);

/// The bytes of a `T` at `at` of `b`, or `None` when `b` ends first.
fn raw<T: Int>(b: &[u8], at: usize) -> Option<T::Raw> {
    let mut raw = T::Raw::default();
    let n = raw.as_ref().len();
    raw.as_mut().copy_from_slice(b.get(at..at.checked_add(n)?)?);
    Some(raw)
}

/// The little-endian `T` at `at` of `b`; `None` when `b` ends first.
pub(crate) fn le<T: Int>(b: &[u8], at: usize) -> Option<T> {
    raw::<T>(b, at).map(T::from_le_raw)
}

/// The big-endian `T` at `at` of `b`; `None` when `b` ends first.
pub(crate) fn be<T: Int>(b: &[u8], at: usize) -> Option<T> {
    raw::<T>(b, at).map(T::from_be_raw)
}

/// A cursor over bytes of the image that reports a short read as a
/// truncation naming the field and its file offset.
#[derive(Debug, Clone)]
pub(crate) struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// File offset of `bytes[0]`.
    base: u64,
    ctx: Context,
}

impl<'a> ByteReader<'a> {
    /// Read `bytes`, which start at file offset `base`, within `ctx`.
    pub(crate) fn new(bytes: &'a [u8], base: u64, ctx: &Context) -> Self {
        ByteReader {
            bytes,
            pos: 0,
            base,
            ctx: ctx.clone(),
        }
    }

    /// The next `n` bytes as `field`.
    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let Some(b) = rest.get(..n) else {
            return Err(Error::truncated(
                self.base + self.pos as u64,
                self.ctx.field(field),
                n as u64,
                rest.len() as u64,
            ));
        };
        self.pos += n;
        Ok(b)
    }

    /// The next little-endian `T` as `field`.
    pub(crate) fn le<T: Int>(&mut self, field: &'static str) -> Result<T> {
        self.raw::<T>(field).map(T::from_le_raw)
    }

    /// The next big-endian `T` as `field`.
    pub(crate) fn be<T: Int>(&mut self, field: &'static str) -> Result<T> {
        self.raw::<T>(field).map(T::from_be_raw)
    }

    fn raw<T: Int>(&mut self, field: &'static str) -> Result<T::Raw> {
        let mut raw = T::Raw::default();
        let n = raw.as_ref().len();
        raw.as_mut().copy_from_slice(self.take(n, field)?);
        Ok(raw)
    }
}

/// Decode a binrw struct from the start of `b`: the value and how many
/// bytes it took. `endian` applies where the type does not fix its own.
pub(crate) fn decode<T>(b: &[u8], endian: Endian) -> binrw::BinResult<(T, usize)>
where
    T: for<'a> BinRead<Args<'a> = ()>,
{
    let mut c = Cursor::new(b);
    let v = T::read_options(&mut c, endian, ())?;
    Ok((v, c.position() as usize))
}

/// Append a binrw struct's bytes to `out`.
pub(crate) fn encode<T>(v: &T, endian: Endian, out: &mut Vec<u8>)
where
    T: for<'a> BinWrite<Args<'a> = ()>,
{
    let end = out.len() as u64;
    let mut c = Cursor::new(out);
    c.set_position(end);
    let r = v.write_options(&mut c, endian, ());
    // Writing plain integers into a Vec cannot fail.
    debug_assert!(r.is_ok(), "encoding into a Vec failed: {r:?}");
}

/// An I/O error in [`read_full`], with how many bytes had arrived before it
/// (callers report the file offset of the failure).
#[derive(Debug)]
pub struct ReadFullError {
    /// Bytes placed at the start of the buffer before the error.
    pub got: usize,
    /// The error the reader returned.
    pub error: io::Error,
}

/// Fill `buf` from `r`, retrying interrupted reads: how many bytes came,
/// fewer than `buf.len()` only when the input ended. Pipes and sockets
/// return short reads; this is the one loop that copes with them.
pub fn read_full<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
) -> std::result::Result<usize, ReadFullError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(ReadFullError { got, error }),
        }
    }
    Ok(got)
}

/// [`read_full`] for a parser: an I/O error becomes the crate's error at
/// file offset `at` plus what had arrived, within `ctx`.
pub(crate) fn read_full_at<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
    at: u64,
    ctx: &Context,
) -> Result<usize> {
    read_full(r, buf)
        .map_err(|e| Error::new(at + e.got as u64, ctx.clone(), ErrorKind::Io(e.error)))
}

/// Write all of `bufs`, retrying short and interrupted writes, so a page
/// batch reaches the sink in as few system calls as the sink allows.
pub(crate) fn write_all_vectored<W: Write>(
    w: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    // Drop leading empty slices (an all-XTAB batch has no pages), so a
    // zero-byte write below really means the sink is stuck.
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole buffer",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_at_offsets_and_past_the_end() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(le::<u16>(&b, 0), Some(0x0201));
        assert_eq!(le::<u32>(&b, 1), Some(0x0504_0302));
        assert_eq!(le::<u64>(&b, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(be::<u32>(&b, 0), Some(0x0102_0304));
        assert_eq!(le::<u64>(&b, 2), None);
        assert_eq!(le::<u32>(&b, usize::MAX), None);
    }

    #[test]
    fn byte_reader_names_field_and_offset() {
        let ctx = Context::root().field("hdr");
        let mut r = ByteReader::new(&[1, 0, 0, 0, 2, 0], 100, &ctx);
        assert_eq!(r.le::<u32>("a").unwrap(), 1);
        let e = r.le::<u32>("b").unwrap_err();
        assert_eq!(e.offset, 104);
        assert_eq!(e.context, ctx.field("b"));
        assert!(matches!(
            e.kind,
            crate::diag::ErrorKind::Truncated {
                needed: 4,
                available: 2
            }
        ));
    }

    /// One byte per read, an interruption before each, then an error.
    struct Stutter(Vec<u8>, bool);
    impl Read for Stutter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            match self.0.first().copied() {
                Some(0xff) => Err(io::Error::other("bad disk")),
                Some(b) => {
                    self.0.remove(0);
                    buf[0] = b;
                    Ok(1)
                }
                None => Ok(0),
            }
        }
    }

    #[test]
    fn read_full_retries_and_counts() {
        let mut buf = [0u8; 4];
        assert_eq!(
            read_full(&mut Stutter(vec![1, 2, 3, 4, 5], false), &mut buf).unwrap(),
            4
        );
        assert_eq!(buf, [1, 2, 3, 4]);
        let mut buf = [0u8; 4];
        assert_eq!(
            read_full(&mut Stutter(vec![7, 8], false), &mut buf).unwrap(),
            2
        );
        let e = read_full(&mut Stutter(vec![7, 0xff], false), &mut buf).unwrap_err();
        assert_eq!(e.got, 1);
        assert_eq!(e.error.kind(), io::ErrorKind::Other);
    }
}
