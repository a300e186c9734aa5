//! The xl save-file header (`struct save_file_header` of `tools/xl/xl.h`)
//! that `xl save` puts before the libxl stream.
//!
//! ```text
//! 32-byte magic | u32 byteorder | u32 mandatory_flags | u32 optional_flags
//! | u32 optional_data_len | optional data: u32 config_len + config (JSON\0)
//! ```
//!
//! Integers are in the saving host's byte order; `xl` refuses a file whose
//! byteorder word does not read as 0x01020304 natively, so only
//! little-endian files are accepted here.

use std::io::{Read, Write};

use crate::bytes::{le, read_full, ByteReader};
use crate::diag::{Context, Error, ErrorKind, Result};

/// Header of an `xl save` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlHeader {
    /// [`XlHeader::BYTEORDER`] as written by a little-endian host.
    pub byteorder: u32,
    /// [`XlHeader::FLAG_JSON`], [`XlHeader::FLAG_STREAM_V2`].
    pub mandatory_flags: u32,
    /// No optional flags are defined; kept as found.
    pub optional_flags: u32,
    /// The optional data (`u32 config_len` + config, possibly more).
    pub optional_data: Vec<u8>,
}

impl XlHeader {
    /// `SAVEFILE_MAGIC`: exactly 32 bytes, no trailing NUL.
    pub const MAGIC: [u8; 32] = *b"Xen saved domain, xl format\n \0 \r";
    /// `SAVEFILE_BYTEORDER_VALUE`.
    pub const BYTEORDER: u32 = 0x0102_0304;
    /// `XL_MANDATORY_FLAG_JSON`: the config is JSON.
    pub const FLAG_JSON: u32 = 1;
    /// `XL_MANDATORY_FLAG_STREAMv2`: a libxl v2 stream follows.
    pub const FLAG_STREAM_V2: u32 = 2;
    /// Mandatory flags xl knows; others make it refuse the file.
    pub(crate) const KNOWN_MANDATORY: u32 = Self::FLAG_JSON | Self::FLAG_STREAM_V2;
    /// Size of the fixed part (magic and four u32).
    pub(crate) const FIXED_SIZE: usize = 48;

    /// The header current xl writes: JSON config with its trailing NUL,
    /// followed by a libxl v2 stream.
    pub fn with_json_config(json: &str) -> Self {
        let mut config = json.as_bytes().to_vec();
        config.push(0);
        let mut optional_data = Vec::with_capacity(4 + config.len());
        optional_data.extend_from_slice(&(config.len() as u32).to_le_bytes());
        optional_data.extend_from_slice(&config);
        XlHeader {
            byteorder: Self::BYTEORDER,
            mandatory_flags: Self::FLAG_JSON | Self::FLAG_STREAM_V2,
            optional_flags: 0,
            optional_data,
        }
    }

    /// True when a libxl v2 stream follows (else a legacy libxc stream).
    pub fn is_stream_v2(&self) -> bool {
        self.mandatory_flags & Self::FLAG_STREAM_V2 != 0
    }

    /// Bytes of the whole header, optional data included.
    pub(crate) fn encoded_len(&self) -> u64 {
        Self::FIXED_SIZE as u64 + self.optional_data.len() as u64
    }

    /// The config bytes (`config_len` bytes after the length word), or an
    /// error if the optional data cannot hold them.
    pub fn config(&self) -> Result<&[u8]> {
        let ctx = Context::root().field("xl header").field("config");
        let at = Self::FIXED_SIZE as u64;
        let Some(len) = le::<u32>(&self.optional_data, 0) else {
            return Err(Error::truncated(
                at,
                ctx,
                4,
                self.optional_data.len() as u64,
            ));
        };
        let avail = self.optional_data.len() - 4;
        usize::try_from(len)
            .ok()
            .and_then(|n| self.optional_data.get(4..n.checked_add(4)?))
            .ok_or_else(|| {
                Error::new(
                    at,
                    ctx,
                    ErrorKind::Oversized {
                        what: "xl config",
                        claimed: u64::from(len),
                        remaining: avail as u64,
                    },
                )
            })
    }

    /// What xl checks of the optional data before restoring: when there
    /// is any, it starts with a `config_len` whose config fits in it (xl
    /// says "Savefile truncated" otherwise). No optional data is fine: xl
    /// then takes the config from its command line.
    pub fn checked_config(&self) -> Result<()> {
        if self.optional_data.is_empty() {
            return Ok(());
        }
        self.config().map(|_| ())
    }

    /// The JSON config text without its trailing NUL.
    pub fn config_json(&self) -> Result<&str> {
        let c = self.config()?;
        let c = c.strip_suffix(&[0]).unwrap_or(c);
        std::str::from_utf8(c).map_err(|e| {
            Error::invalid(
                Self::FIXED_SIZE as u64 + 4 + e.valid_up_to() as u64,
                Context::root().field("xl header").field("config"),
                "UTF-8 JSON text",
                "invalid UTF-8",
            )
        })
    }

    fn fixed(b: &[u8; Self::FIXED_SIZE]) -> Result<(u32, u32, u32, u32)> {
        let ctx = Context::root().field("xl header");
        if b[..32] != Self::MAGIC {
            return Err(Error::invalid(
                0,
                ctx.field("magic"),
                "\"Xen saved domain, xl format\\n \\0 \\r\"",
                format!("{:?}", String::from_utf8_lossy(&b[..32])),
            ));
        }
        let mut r = ByteReader::new(&b[32..], 32, &ctx);
        Ok((
            r.le("byteorder")?,
            r.le("mandatory_flags")?,
            r.le("optional_flags")?,
            r.le("optional_data_len")?,
        ))
    }

    fn check(byteorder: u32, mandatory: u32) -> Result<()> {
        let ctx = Context::root().field("xl header");
        if byteorder != Self::BYTEORDER {
            return Err(Error::invalid(
                32,
                ctx.field("byteorder"),
                "0x01020304 (a little-endian host)",
                format!("{byteorder:#010x}"),
            ));
        }
        if mandatory & !Self::KNOWN_MANDATORY != 0 {
            return Err(Error::invalid(
                36,
                ctx.field("mandatory_flags"),
                "only bits 0 (JSON) and 1 (STREAMv2)",
                format!("{mandatory:#x}"),
            ));
        }
        Ok(())
    }

    /// Parse from the start of a file in memory, refusing what xl refuses.
    pub fn parse(data: &[u8]) -> Result<Self> {
        let h = Self::parse_lenient(data)?;
        Self::check(h.byteorder, h.mandatory_flags)?;
        Ok(h)
    }

    /// Parse without judging byteorder and flags (for validation, which
    /// reports them as findings).
    pub(crate) fn parse_lenient(data: &[u8]) -> Result<Self> {
        let ctx = Context::root().field("xl header");
        let Some(fixed) = data.get(..Self::FIXED_SIZE) else {
            return Err(Error::truncated(
                0,
                ctx,
                Self::FIXED_SIZE as u64,
                data.len() as u64,
            ));
        };
        let mut b = [0u8; Self::FIXED_SIZE];
        b.copy_from_slice(fixed);
        let (byteorder, mandatory_flags, optional_flags, opt_len) = Self::fixed(&b)?;
        // `fixed` above holds FIXED_SIZE bytes, so this is the (maybe empty) rest.
        let rest = data.get(Self::FIXED_SIZE..).unwrap_or_default();
        let Some(opt) = rest.get(..opt_len as usize) else {
            return Err(Error::new(
                44,
                ctx.field("optional_data_len"),
                ErrorKind::Oversized {
                    what: "xl optional data",
                    claimed: u64::from(opt_len),
                    remaining: rest.len() as u64,
                },
            ));
        };
        Ok(XlHeader {
            byteorder,
            mandatory_flags,
            optional_flags,
            optional_data: opt.to_vec(),
        })
    }

    /// Read from a stream at file offset 0, refusing what xl refuses. The
    /// optional data is read as it arrives, so a lying length costs no
    /// more memory than the bytes really present.
    pub fn read<R: Read>(r: &mut R) -> Result<Self> {
        let ctx = Context::root().field("xl header");
        let mut b = [0u8; Self::FIXED_SIZE];
        read_exact_at(r, &mut b, 0, &ctx)?;
        let (byteorder, mandatory_flags, optional_flags, opt_len) = Self::fixed(&b)?;
        Self::check(byteorder, mandatory_flags)?;
        let mut optional_data = Vec::new();
        let got = r
            .by_ref()
            .take(u64::from(opt_len))
            .read_to_end(&mut optional_data)
            .map_err(|e| {
                Error::new(
                    Self::FIXED_SIZE as u64,
                    ctx.field("optional data"),
                    ErrorKind::Io(e),
                )
            })?;
        if got as u64 != u64::from(opt_len) {
            return Err(Error::truncated(
                Self::FIXED_SIZE as u64,
                ctx.field("optional data"),
                u64::from(opt_len),
                got as u64,
            ));
        }
        Ok(XlHeader {
            byteorder,
            mandatory_flags,
            optional_flags,
            optional_data,
        })
    }

    /// Encode the whole header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.encoded_len() as usize);
        v.extend_from_slice(&Self::MAGIC);
        v.extend_from_slice(&self.byteorder.to_le_bytes());
        v.extend_from_slice(&self.mandatory_flags.to_le_bytes());
        v.extend_from_slice(&self.optional_flags.to_le_bytes());
        v.extend_from_slice(&(self.optional_data.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.optional_data);
        v
    }

    /// Write the header; returns the file offset after it, where the
    /// libxl stream starts.
    pub fn write<W: Write>(&self, w: &mut W) -> Result<u64> {
        if u32::try_from(self.optional_data.len()).is_err() {
            return Err(Error::invalid(
                44,
                Context::root()
                    .field("xl header")
                    .field("optional_data_len"),
                "optional data below 4 GiB",
                self.optional_data.len().to_string(),
            ));
        }
        w.write_all(&self.to_bytes())
            .map_err(|e| Error::new(0, Context::root().field("xl header"), ErrorKind::Io(e)))?;
        Ok(self.encoded_len())
    }
}

fn read_exact_at<R: Read>(r: &mut R, buf: &mut [u8], at: u64, ctx: &Context) -> Result<()> {
    match read_full(r, buf) {
        Ok(got) if got == buf.len() => Ok(()),
        Ok(got) => Err(Error::truncated(
            at,
            ctx.clone(),
            buf.len() as u64,
            got as u64,
        )),
        Err(e) => Err(Error::new(
            at + e.got as u64,
            ctx.clone(),
            ErrorKind::Io(e.error),
        )),
    }
}
