//! The field-by-field listing of a vCPU context, for `show`, `diff` and JSON.
//!
//! The listing is table driven: each layout is described once as a sequence
//! of (name, offset, width) covering every byte, and values are read from the
//! raw bytes. Padding appears as byte fields so a diff sees every byte.

use std::sync::OnceLock;

use super::layout::{FPU_CTXT_SIZE, GDT_FRAMES, SIZE_X86_32, SIZE_X86_64, TRAP_ENTRIES};
use crate::bytes::le;
use crate::WordSize;

/// The listing shares its shape with the HVM records' (one type for
/// `show`, `diff` and JSON across both).
pub use crate::fields::{Field, FieldValue};

/// How a [`FieldSpec`]'s bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum FieldKind {
    /// Little-endian unsigned integer of the spec's size (1, 2, 4 or 8).
    Uint,
    /// Kept as bytes.
    Bytes,
}

/// Where one field of a layout lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldSpec {
    /// Same name as in [`Field::name`].
    pub name: String,
    /// Byte offset from the start of the context.
    pub offset: usize,
    /// Width in bytes.
    pub size: usize,
    /// How to read it.
    pub kind: FieldKind,
}

impl FieldSpec {
    /// Read this field's value from a context's bytes; `None` when `raw` is
    /// too short (never for a parsed [`super::VcpuContext`]).
    pub fn read(&self, raw: &[u8]) -> Option<FieldValue> {
        let b = raw.get(self.offset..self.offset.checked_add(self.size)?)?;
        Some(match self.kind {
            FieldKind::Bytes => FieldValue::Bytes(b.to_vec()),
            FieldKind::Uint => {
                let mut v = [0u8; 8];
                v.get_mut(..b.len())?.copy_from_slice(b);
                FieldValue::U64 {
                    value: le(&v, 0)?,
                    bits: u8::try_from(self.size * 8).ok()?,
                }
            }
        })
    }
}

struct Builder {
    specs: Vec<FieldSpec>,
    offset: usize,
}

impl Builder {
    fn new() -> Self {
        Builder {
            specs: Vec::new(),
            offset: 0,
        }
    }

    fn push(&mut self, name: String, size: usize, kind: FieldKind) {
        self.specs.push(FieldSpec {
            name,
            offset: self.offset,
            size,
            kind,
        });
        self.offset += size;
    }

    fn uint(&mut self, name: impl Into<String>, size: usize) {
        self.push(name.into(), size, FieldKind::Uint);
    }

    fn bytes(&mut self, name: impl Into<String>, size: usize) {
        self.push(name.into(), size, FieldKind::Bytes);
    }
}

fn build_x86_64() -> Vec<FieldSpec> {
    let mut b = Builder::new();
    b.bytes("fpu_ctxt", FPU_CTXT_SIZE);
    b.uint("flags", 8);
    for r in [
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
        "rsi", "rdi",
    ] {
        b.uint(format!("user_regs.{r}"), 8);
    }
    b.uint("user_regs.error_code", 4);
    b.uint("user_regs.entry_vector", 4);
    b.uint("user_regs.rip", 8);
    b.uint("user_regs.cs", 2);
    b.bytes("user_regs._pad0", 2);
    b.uint("user_regs.saved_upcall_mask", 1);
    b.bytes("user_regs._pad1", 3);
    b.uint("user_regs.rflags", 8);
    b.uint("user_regs.rsp", 8);
    for (i, seg) in ["ss", "es", "ds", "fs", "gs"].iter().enumerate() {
        b.uint(format!("user_regs.{seg}"), 2);
        b.bytes(format!("user_regs._pad{}", i + 2), 6);
    }
    for i in 0..TRAP_ENTRIES {
        b.uint(format!("trap_ctxt[{i}].vector"), 1);
        b.uint(format!("trap_ctxt[{i}].flags"), 1);
        b.uint(format!("trap_ctxt[{i}].cs"), 2);
        b.bytes(format!("trap_ctxt[{i}]._pad"), 4);
        b.uint(format!("trap_ctxt[{i}].address"), 8);
    }
    b.uint("ldt_base", 8);
    b.uint("ldt_ents", 8);
    for i in 0..GDT_FRAMES {
        b.uint(format!("gdt_frames[{i}]"), 8);
    }
    b.uint("gdt_ents", 8);
    b.uint("kernel_ss", 8);
    b.uint("kernel_sp", 8);
    for i in 0..8 {
        b.uint(format!("ctrlreg[{i}]"), 8);
    }
    for i in 0..8 {
        b.uint(format!("debugreg[{i}]"), 8);
    }
    for name in [
        "event_callback_eip",
        "failsafe_callback_eip",
        "syscall_callback_eip",
        "vm_assist",
        "fs_base",
        "gs_base_kernel",
        "gs_base_user",
    ] {
        b.uint(name, 8);
    }
    debug_assert_eq!(b.offset, SIZE_X86_64);
    b.specs
}

fn build_x86_32() -> Vec<FieldSpec> {
    let mut b = Builder::new();
    b.bytes("fpu_ctxt", FPU_CTXT_SIZE);
    b.uint("flags", 4);
    for r in ["ebx", "ecx", "edx", "esi", "edi", "ebp", "eax"] {
        b.uint(format!("user_regs.{r}"), 4);
    }
    b.uint("user_regs.error_code", 2);
    b.uint("user_regs.entry_vector", 2);
    b.uint("user_regs.eip", 4);
    b.uint("user_regs.cs", 2);
    b.uint("user_regs.saved_upcall_mask", 1);
    b.bytes("user_regs._pad0", 1);
    b.uint("user_regs.eflags", 4);
    b.uint("user_regs.esp", 4);
    for (i, seg) in ["ss", "es", "ds", "fs", "gs"].iter().enumerate() {
        b.uint(format!("user_regs.{seg}"), 2);
        b.bytes(format!("user_regs._pad{}", i + 1), 2);
    }
    for i in 0..TRAP_ENTRIES {
        b.uint(format!("trap_ctxt[{i}].vector"), 1);
        b.uint(format!("trap_ctxt[{i}].flags"), 1);
        b.uint(format!("trap_ctxt[{i}].cs"), 2);
        b.uint(format!("trap_ctxt[{i}].address"), 4);
    }
    b.uint("ldt_base", 4);
    b.uint("ldt_ents", 4);
    for i in 0..GDT_FRAMES {
        b.uint(format!("gdt_frames[{i}]"), 4);
    }
    b.uint("gdt_ents", 4);
    b.uint("kernel_ss", 4);
    b.uint("kernel_sp", 4);
    for i in 0..8 {
        b.uint(format!("ctrlreg[{i}]"), 4);
    }
    for i in 0..8 {
        b.uint(format!("debugreg[{i}]"), 4);
    }
    for name in [
        "event_callback_cs",
        "event_callback_eip",
        "failsafe_callback_cs",
        "failsafe_callback_eip",
        "vm_assist",
    ] {
        b.uint(name, 4);
    }
    debug_assert_eq!(b.offset, SIZE_X86_32);
    b.specs
}

/// Every field of the layout for a toolstack word size, in offset order,
/// covering each byte exactly once. Built once and cached.
pub(crate) fn field_specs(word: WordSize) -> &'static [FieldSpec] {
    static X64: OnceLock<Vec<FieldSpec>> = OnceLock::new();
    static X32: OnceLock<Vec<FieldSpec>> = OnceLock::new();
    match word {
        WordSize::W64 => X64.get_or_init(build_x86_64),
        WordSize::W32 => X32.get_or_init(build_x86_32),
    }
}
