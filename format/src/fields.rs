//! A generic, ordered listing of a record's fields.
//!
//! Used by both record decoders, [`crate::hvm`] and [`crate::vcpu`], so it
//! sits below them.
//!
//! `hvm-inspect show hvm`, `diff` and the JSON reports all want the same
//! thing from a record: every field, in layout order, with its value and
//! width. Deriving that listing from the struct definitions (one macro per
//! record) keeps it complete by construction instead of by vigilance.

use std::fmt;

/// One field of a decoded record: a dotted/indexed name as in Xen's C
/// structs (`channels[1].count`, `redirtbl[4].mask`) and its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Field {
    /// Field path in C notation.
    pub name: String,
    /// The value with its width.
    pub value: FieldValue,
}

impl Field {
    /// A field from a name and a value.
    pub fn new(name: impl Into<String>, value: FieldValue) -> Self {
        Field {
            name: name.into(),
            value,
        }
    }
}

/// A field's value. Integers carry their width in bits so that renderers can
/// pad hex to the C type and so that bitfields (`delivery_mode:3`) are not
/// mistaken for whole bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    /// An unsigned integer or bitfield of `bits` bits (1..=64).
    U64 {
        /// The value, zero-extended.
        value: u64,
        /// The field's width in bits.
        bits: u8,
    },
    /// A signed integer of `bits` bits (`rtc_offset`).
    I64 {
        /// The value, sign-extended.
        value: i64,
        /// The field's width in bits.
        bits: u8,
    },
    /// An opaque byte array (`fpu_regs`, `cmos_data`, reserved areas).
    Bytes(Vec<u8>),
}

impl FieldValue {
    /// An unsigned value of the given width in bits.
    pub(crate) fn uint(value: u64, bits: u8) -> Self {
        FieldValue::U64 { value, bits }
    }

    /// True when every bit is zero (renderers may elide such fields).
    pub fn is_zero(&self) -> bool {
        match self {
            FieldValue::U64 { value, .. } => *value == 0,
            FieldValue::I64 { value, .. } => *value == 0,
            FieldValue::Bytes(b) => b.iter().all(|&x| x == 0),
        }
    }

    /// Width in bits (bytes × 8 for byte arrays).
    pub(crate) fn bits(&self) -> u64 {
        match self {
            FieldValue::U64 { bits, .. } | FieldValue::I64 { bits, .. } => u64::from(*bits),
            FieldValue::Bytes(b) => b.len() as u64 * 8,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl fmt::Display for FieldValue {
    /// Integers as zero-padded hex of their C width (bitfields of one bit as
    /// 0/1), byte arrays as plain hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::U64 { value, bits: 1 } => write!(f, "{value}"),
            FieldValue::U64 { value, bits } => {
                let digits = usize::from(*bits).div_ceil(4);
                write!(f, "0x{value:0digits$x}")
            }
            FieldValue::I64 { value, .. } => write!(f, "{value}"),
            FieldValue::Bytes(b) => f.write_str(&hex(b)),
        }
    }
}

/// JSON shape: `{"bits": 64, "value": 1234}` for integers (numbers, so
/// scripts can compare them), `{"bits": 4096, "hex": "00ff…"}` for bytes.
impl serde::Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("FieldValue", 2)?;
        st.serialize_field("bits", &self.bits())?;
        match self {
            FieldValue::U64 { value, .. } => st.serialize_field("value", value)?,
            FieldValue::I64 { value, .. } => st.serialize_field("value", value)?,
            FieldValue::Bytes(b) => st.serialize_field("hex", &hex(b))?,
        }
        st.end()
    }
}

/// Something that can list itself as fields under a name. Implemented for
/// the scalar types, arrays (elements as `name[i]`, except byte arrays,
/// which stay one [`FieldValue::Bytes`]) and every record struct.
pub trait FieldSource {
    /// Append this value's fields under `name`.
    fn push_fields(&self, name: &str, out: &mut Vec<Field>);

    /// Append the fields of an array of these. Byte arrays override this to
    /// stay one field (the same trick `ToString` plays for slices).
    fn push_slice(items: &[Self], name: &str, out: &mut Vec<Field>)
    where
        Self: Sized,
    {
        for (i, item) in items.iter().enumerate() {
            item.push_fields(&format!("{name}[{i}]"), out);
        }
    }
}

macro_rules! scalar_source {
    ($($t:ty => $bits:expr),*) => {$(
        impl FieldSource for $t {
            fn push_fields(&self, name: &str, out: &mut Vec<Field>) {
                out.push(Field::new(name, FieldValue::uint(u64::from(*self), $bits)));
            }
        }
    )*};
}
scalar_source!(u16 => 16, u32 => 32, u64 => 64);

impl FieldSource for u8 {
    fn push_fields(&self, name: &str, out: &mut Vec<Field>) {
        out.push(Field::new(name, FieldValue::uint(u64::from(*self), 8)));
    }

    fn push_slice(items: &[Self], name: &str, out: &mut Vec<Field>) {
        out.push(Field::new(name, FieldValue::Bytes(items.to_vec())));
    }
}

impl FieldSource for i64 {
    fn push_fields(&self, name: &str, out: &mut Vec<Field>) {
        out.push(Field::new(
            name,
            FieldValue::I64 {
                value: *self,
                bits: 64,
            },
        ));
    }
}

impl<T: FieldSource, const N: usize> FieldSource for [T; N] {
    fn push_fields(&self, name: &str, out: &mut Vec<Field>) {
        T::push_slice(self, name, out);
    }
}

/// Push a bitfield `bits` wide starting at bit `shift` of `word`.
pub(crate) fn push_bits(out: &mut Vec<Field>, name: String, word: u64, shift: u32, bits: u8) {
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    out.push(Field::new(
        name,
        FieldValue::uint((word >> shift) & mask, bits),
    ));
}

/// Join a prefix and a member name (`""` + `x` = `x`, `a` + `x` = `a.x`).
pub(crate) fn member(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Define a fixed-layout, little-endian record struct (binrw read/write)
/// whose [`FieldSource`] listing follows its members in declaration order.
/// Nested structs list as `outer.inner`.
macro_rules! hvm_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident ($size:expr) {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, binrw::BinRead, binrw::BinWrite)]
        #[brw(little)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $name {
            /// Payload size of this layout in bytes.
            pub const SIZE: usize = $size;
        }

        impl $crate::fields::FieldSource for $name {
            fn push_fields(&self, prefix: &str, out: &mut Vec<$crate::fields::Field>) {
                $(
                    $crate::fields::FieldSource::push_fields(
                        &self.$field,
                        &$crate::fields::member(prefix, stringify!($field)),
                        out,
                    );
                )*
            }
        }
    };
}
pub(crate) use hvm_struct;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_list_elements_but_bytes_stay_whole() {
        let mut out = Vec::new();
        [7u64, 9].push_fields("msr", &mut out);
        [1u8, 2, 3].push_fields("route", &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].name, "msr[0]");
        assert_eq!(out[1].value, FieldValue::uint(9, 64));
        assert_eq!(out[2].value, FieldValue::Bytes(vec![1, 2, 3]));
    }

    #[test]
    fn display_pads_to_width_and_bits_print_plain() {
        assert_eq!(FieldValue::uint(0x1f, 16).to_string(), "0x001f");
        assert_eq!(FieldValue::uint(5, 3).to_string(), "0x5");
        assert_eq!(FieldValue::uint(1, 1).to_string(), "1");
        assert_eq!(FieldValue::Bytes(vec![0xab, 0x01]).to_string(), "ab01");
        assert!(FieldValue::Bytes(vec![0, 0]).is_zero());
        assert!(!FieldValue::I64 {
            value: -1,
            bits: 64
        }
        .is_zero());
    }

    #[test]
    fn push_bits_masks_and_shifts() {
        let mut out = Vec::new();
        push_bits(&mut out, "x".into(), 0xABCD, 4, 8);
        assert_eq!(out[0].value, FieldValue::uint(0xBC, 8));
    }
}
