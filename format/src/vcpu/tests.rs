//! Layout tests: bytes are placed by hand at the offsets of docs/format.md §6,
//! independent of the binrw structs and of the field table.

use super::*;

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}
fn put64(buf: &mut [u8], off: usize, v: u64) {
    put(buf, off, &v.to_le_bytes());
}
fn put32(buf: &mut [u8], off: usize, v: u32) {
    put(buf, off, &v.to_le_bytes());
}
fn put16(buf: &mut [u8], off: usize, v: u16) {
    put(buf, off, &v.to_le_bytes());
}

fn field(ctx: &VcpuContext, name: &str) -> FieldValue {
    ctx.fields()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .value
}

fn as_u64(v: FieldValue) -> Option<u64> {
    match v {
        FieldValue::U64 { value, .. } => Some(value),
        _ => None,
    }
}

fn spec(word: WordSize, name: &str) -> FieldSpec {
    field_specs(word)
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no spec {name}"))
        .clone()
}

/// A 64-bit context with a distinct value in every named field of §6.
fn hand_built_64() -> Vec<u8> {
    let mut b = vec![0u8; 5168];
    for (i, x) in b[..512].iter_mut().enumerate() {
        *x = (i % 251) as u8;
    }
    put64(&mut b, 512, 0x21);
    let u = 520;
    let gprs = [
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
        "rsi", "rdi",
    ];
    for (i, _) in gprs.iter().enumerate() {
        put64(&mut b, u + 8 * i, 0x1000_0000_0000_0000 + i as u64);
    }
    put32(&mut b, u + 120, 0xEC0D_E000);
    put32(&mut b, u + 124, 0xE17E_0000);
    put64(&mut b, u + 128, 0xFFFF_8000_0010_0000);
    put16(&mut b, u + 136, 0x0010);
    put(&mut b, u + 138, &[0xA0, 0xA1]); // _pad0
    b[u + 140] = 0x5A;
    put(&mut b, u + 141, &[0xB0, 0xB1, 0xB2]); // _pad1
    put64(&mut b, u + 144, 0x0000_0000_0024_6202);
    put64(&mut b, u + 152, 0xFFFF_8000_00FF_F000);
    for (i, off) in [160usize, 168, 176, 184, 192].iter().enumerate() {
        put16(&mut b, u + off, 0x18 + i as u16);
        b[u + off + 7] = 0xC0 + i as u8; // last pad byte of each segment
    }
    // trap_ctxt[0] and [255]
    put(&mut b, 720, &[0x0E, 0x03]);
    put16(&mut b, 722, 0xE033);
    put(&mut b, 724, &[0xD0, 0xD1, 0xD2, 0xD3]);
    put64(&mut b, 728, 0xFFFF_8000_0000_1234);
    let t = 720 + 255 * 16;
    put(&mut b, t, &[0xFF, 0x01]);
    put16(&mut b, t + 2, 0xE02B);
    put64(&mut b, t + 8, 0xFFFF_8000_0000_ABCD);
    put64(&mut b, 4816, 0x4816);
    put64(&mut b, 4824, 0x4824);
    for i in 0..16 {
        put64(&mut b, 4832 + 8 * i, 0x6D70_0000 + i as u64);
    }
    put64(&mut b, 4960, 0x4960);
    put64(&mut b, 4968, 0x4968);
    put64(&mut b, 4976, 0x4976);
    for i in 0..8 {
        put64(&mut b, 4984 + 8 * i, 0xC000_0000 + i as u64);
        put64(&mut b, 5048 + 8 * i, 0xD000_0000 + i as u64);
    }
    put64(&mut b, 5112, 0x5112);
    put64(&mut b, 5120, 0x5120);
    put64(&mut b, 5128, 0x5128);
    put64(&mut b, 5136, 0x5136);
    put64(&mut b, 5144, 0x5144);
    put64(&mut b, 5152, 0x5152);
    put64(&mut b, 5160, 0x5160);
    b
}

/// A 32-bit context with a distinct value in every named field of §6.
fn hand_built_32() -> Vec<u8> {
    let mut b = vec![0u8; 2800];
    for (i, x) in b[..512].iter_mut().enumerate() {
        *x = (i % 241) as u8;
    }
    put32(&mut b, 512, 0x21);
    let u = 516;
    for i in 0..7 {
        put32(&mut b, u + 4 * i, 0x1000_0000 + i as u32);
    }
    put16(&mut b, u + 28, 0xEC0D);
    put16(&mut b, u + 30, 0xE17E);
    put32(&mut b, u + 32, 0xC010_0000);
    put16(&mut b, u + 36, 0x0060);
    b[u + 38] = 0x5A;
    b[u + 39] = 0xB0; // _pad0
    put32(&mut b, u + 40, 0x0024_6202);
    put32(&mut b, u + 44, 0xC0FF_F000);
    for (i, off) in [48usize, 52, 56, 60, 64].iter().enumerate() {
        put16(&mut b, u + off, 0x68 + i as u16);
        b[u + off + 3] = 0xC0 + i as u8;
    }
    let t = 584 + 255 * 8;
    put(&mut b, t, &[0xFF, 0x01]);
    put16(&mut b, t + 2, 0xE019);
    put32(&mut b, t + 4, 0xC000_ABCD);
    put32(&mut b, 2632, 0x2632);
    put32(&mut b, 2636, 0x2636);
    for i in 0..16 {
        put32(&mut b, 2640 + 4 * i, 0x6D70_0000 + i as u32);
    }
    put32(&mut b, 2704, 0x2704);
    put32(&mut b, 2708, 0x2708);
    put32(&mut b, 2712, 0x2712);
    for i in 0..8 {
        put32(&mut b, 2716 + 4 * i, 0xC000_0000 + i as u32);
        put32(&mut b, 2748 + 4 * i, 0xD000_0000 + i as u32);
    }
    put32(&mut b, 2780, 0x2780);
    put32(&mut b, 2784, 0x2784);
    put32(&mut b, 2788, 0x2788);
    put32(&mut b, 2792, 0x2792);
    put32(&mut b, 2796, 0x2796);
    b
}

#[test]
fn x86_64_layout_matches_notes() {
    let raw = hand_built_64();
    let ctx = VcpuContext::parse(&raw).unwrap();
    assert_eq!(ctx.word_size(), WordSize::W64);
    assert_eq!(ctx.as_bytes(), &raw[..]);
    assert_eq!(ctx.flags(), VGCF_I387_VALID | VGCF_ONLINE);
    assert_eq!(ctx.fpu_ctxt()[..], raw[..512]);
    assert_eq!(ctx.r15(), 0x1000_0000_0000_0000);
    assert_eq!(ctx.r14(), 0x1000_0000_0000_0001);
    assert_eq!(ctx.r13(), 0x1000_0000_0000_0002);
    assert_eq!(ctx.r12(), 0x1000_0000_0000_0003);
    assert_eq!(ctx.rbp(), 0x1000_0000_0000_0004);
    assert_eq!(ctx.rbx(), 0x1000_0000_0000_0005);
    assert_eq!(ctx.r11(), 0x1000_0000_0000_0006);
    assert_eq!(ctx.r10(), 0x1000_0000_0000_0007);
    assert_eq!(ctx.r9(), 0x1000_0000_0000_0008);
    assert_eq!(ctx.r8(), 0x1000_0000_0000_0009);
    assert_eq!(ctx.rax(), 0x1000_0000_0000_000A);
    assert_eq!(ctx.rcx(), 0x1000_0000_0000_000B);
    assert_eq!(ctx.rdx(), 0x1000_0000_0000_000C);
    assert_eq!(ctx.rsi(), 0x1000_0000_0000_000D);
    assert_eq!(ctx.rdi(), 0x1000_0000_0000_000E);
    assert_eq!(ctx.error_code(), 0xEC0D_E000);
    assert_eq!(ctx.entry_vector(), 0xE17E_0000);
    assert_eq!(ctx.rip(), 0xFFFF_8000_0010_0000);
    assert_eq!(ctx.cs(), 0x10);
    assert_eq!(ctx.saved_upcall_mask(), 0x5A);
    assert_eq!(ctx.rflags(), 0x24_6202);
    assert_eq!(ctx.rsp(), 0xFFFF_8000_00FF_F000);
    assert_eq!(
        [ctx.ss(), ctx.es(), ctx.ds(), ctx.fs(), ctx.gs()],
        [0x18, 0x19, 0x1A, 0x1B, 0x1C]
    );
    for i in 0..8 {
        assert_eq!(ctx.ctrlreg(i), 0xC000_0000 + i as u64);
        assert_eq!(ctx.debugreg(i), 0xD000_0000 + i as u64);
    }
    assert_eq!(ctx.ctrlreg(8), 0);
    assert_eq!(
        [ctx.cr0(), ctx.cr2(), ctx.cr3(), ctx.cr4()],
        [0xC000_0000, 0xC000_0002, 0xC000_0003, 0xC000_0004]
    );
    assert_eq!(
        [ctx.fs_base(), ctx.gs_base_kernel(), ctx.gs_base_user()],
        [0x5144, 0x5152, 0x5160]
    );

    let VcpuLayout::X86_64(c) = ctx.layout() else {
        panic!("expected the x86_64 layout")
    };
    assert_eq!(c.user_regs._pad0, [0xA0, 0xA1]);
    assert_eq!(c.user_regs._pad1, [0xB0, 0xB1, 0xB2]);
    assert_eq!(c.user_regs._pad6[5], 0xC4);
    assert_eq!(
        c.trap_ctxt[0],
        TrapInfo64 {
            vector: 0x0E,
            flags: 3,
            cs: 0xE033,
            _pad: [0xD0, 0xD1, 0xD2, 0xD3],
            address: 0xFFFF_8000_0000_1234
        }
    );
    assert_eq!(c.trap_ctxt[255].vector, 0xFF);
    assert_eq!(c.trap_ctxt[255].cs, 0xE02B);
    assert_eq!(c.trap_ctxt[255].address, 0xFFFF_8000_0000_ABCD);
    assert_eq!((c.ldt_base, c.ldt_ents), (0x4816, 0x4824));
    assert_eq!(c.gdt_frames[15], 0x6D70_000F);
    assert_eq!(
        (c.gdt_ents, c.kernel_ss, c.kernel_sp),
        (0x4960, 0x4968, 0x4976)
    );
    assert_eq!(
        [
            c.event_callback_eip,
            c.failsafe_callback_eip,
            c.syscall_callback_eip,
            c.vm_assist
        ],
        [0x5112, 0x5120, 0x5128, 0x5136]
    );
    // The typed record writes back the same bytes, padding included.
    assert_eq!(VcpuContext::from_x86_64((**c).clone()).as_bytes(), &raw[..]);
}

#[test]
fn x86_32_layout_matches_notes() {
    let raw = hand_built_32();
    let ctx = VcpuContext::parse(&raw).unwrap();
    assert_eq!(ctx.word_size(), WordSize::W32);
    assert_eq!(ctx.size(), 2800);
    assert_eq!(ctx.flags(), 0x21);
    assert_eq!(
        [
            ctx.rbx(),
            ctx.rcx(),
            ctx.rdx(),
            ctx.rsi(),
            ctx.rdi(),
            ctx.rbp(),
            ctx.rax()
        ],
        [
            0x1000_0000,
            0x1000_0001,
            0x1000_0002,
            0x1000_0003,
            0x1000_0004,
            0x1000_0005,
            0x1000_0006
        ]
    );
    assert_eq!(ctx.r8(), 0);
    assert_eq!(ctx.error_code(), 0xEC0D);
    assert_eq!(ctx.entry_vector(), 0xE17E);
    assert_eq!(ctx.rip(), 0xC010_0000);
    assert_eq!(ctx.cs(), 0x60);
    assert_eq!(ctx.saved_upcall_mask(), 0x5A);
    assert_eq!(ctx.rflags(), 0x24_6202);
    assert_eq!(ctx.rsp(), 0xC0FF_F000);
    assert_eq!(
        [ctx.ss(), ctx.es(), ctx.ds(), ctx.fs(), ctx.gs()],
        [0x68, 0x69, 0x6A, 0x6B, 0x6C]
    );
    for i in 0..8 {
        assert_eq!(ctx.ctrlreg(i), 0xC000_0000 + i as u64);
        assert_eq!(ctx.debugreg(i), 0xD000_0000 + i as u64);
    }
    assert_eq!(ctx.fs_base(), 0);
    let VcpuLayout::X86_32(c) = ctx.layout() else {
        panic!("expected the i386 layout")
    };
    assert_eq!(c.user_regs._pad0, 0xB0);
    assert_eq!(c.user_regs._pad5, [0, 0xC4]);
    assert_eq!(
        c.trap_ctxt[255],
        TrapInfo32 {
            vector: 0xFF,
            flags: 1,
            cs: 0xE019,
            address: 0xC000_ABCD
        }
    );
    assert_eq!((c.ldt_base, c.ldt_ents), (0x2632, 0x2636));
    assert_eq!(c.gdt_frames[0], 0x6D70_0000);
    assert_eq!(c.gdt_frames[15], 0x6D70_000F);
    assert_eq!(
        (c.gdt_ents, c.kernel_ss, c.kernel_sp),
        (0x2704, 0x2708, 0x2712)
    );
    assert_eq!(
        [
            c.event_callback_cs,
            c.event_callback_eip,
            c.failsafe_callback_cs,
            c.failsafe_callback_eip,
            c.vm_assist
        ],
        [0x2780, 0x2784, 0x2788, 0x2792, 0x2796]
    );
    assert_eq!(VcpuContext::from_x86_32((**c).clone()).as_bytes(), &raw[..]);
}

#[test]
fn field_table_offsets_match_notes() {
    let w64 = [
        ("flags", 512, 8),
        ("user_regs.r15", 520, 8),
        ("user_regs.rdi", 520 + 112, 8),
        ("user_regs.error_code", 520 + 120, 4),
        ("user_regs.entry_vector", 520 + 124, 4),
        ("user_regs.rip", 520 + 128, 8),
        ("user_regs.cs", 520 + 136, 2),
        ("user_regs.saved_upcall_mask", 520 + 140, 1),
        ("user_regs.rflags", 520 + 144, 8),
        ("user_regs.rsp", 520 + 152, 8),
        ("user_regs.gs", 520 + 192, 2),
        ("trap_ctxt[0].vector", 720, 1),
        ("trap_ctxt[1].address", 720 + 16 + 8, 8),
        ("ldt_base", 4816, 8),
        ("gdt_frames[0]", 4832, 8),
        ("gdt_ents", 4960, 8),
        ("ctrlreg[0]", 4984, 8),
        ("debugreg[0]", 5048, 8),
        ("vm_assist", 5136, 8),
        ("gs_base_user", 5160, 8),
    ];
    for (name, off, size) in w64 {
        let s = spec(WordSize::W64, name);
        assert_eq!((s.offset, s.size), (off, size), "{name}");
    }
    let w32 = [
        ("flags", 512, 4),
        ("user_regs.ebx", 516, 4),
        ("user_regs.eip", 516 + 32, 4),
        ("user_regs.eflags", 516 + 40, 4),
        ("user_regs.gs", 516 + 64, 2),
        ("trap_ctxt[0].vector", 584, 1),
        ("ldt_base", 2632, 4),
        ("gdt_frames[0]", 2640, 4),
        ("ctrlreg[0]", 2716, 4),
        ("debugreg[0]", 2748, 4),
        ("event_callback_cs", 2780, 4),
        ("vm_assist", 2796, 4),
    ];
    for (name, off, size) in w32 {
        let s = spec(WordSize::W32, name);
        assert_eq!((s.offset, s.size), (off, size), "{name}");
    }
}

#[test]
fn field_table_covers_every_byte_once() {
    for word in [WordSize::W64, WordSize::W32] {
        let specs = field_specs(word);
        let mut next = 0;
        let mut names = std::collections::HashSet::new();
        for s in specs {
            assert_eq!(s.offset, next, "{} starts where the previous ended", s.name);
            assert!(names.insert(s.name.clone()), "duplicate {}", s.name);
            next += s.size;
        }
        assert_eq!(next, context_size(word));
    }
}

#[test]
fn fields_agree_with_typed_view() {
    let ctx = VcpuContext::parse(&hand_built_64()).unwrap();
    let f = |n| field(&ctx, n);
    assert_eq!(
        f("user_regs.rip"),
        FieldValue::U64 {
            value: ctx.rip(),
            bits: 64
        }
    );
    assert_eq!(
        f("user_regs.cs"),
        FieldValue::U64 {
            value: 0x10,
            bits: 16
        }
    );
    assert_eq!(f("user_regs._pad0"), FieldValue::Bytes(vec![0xA0, 0xA1]));
    assert_eq!(
        f("trap_ctxt[0]._pad"),
        FieldValue::Bytes(vec![0xD0, 0xD1, 0xD2, 0xD3])
    );
    assert_eq!(as_u64(f("ctrlreg[3]")), Some(ctx.cr3()));
    assert_eq!(as_u64(f("fs_base")), Some(0x5144));
    assert_eq!(f("fpu_ctxt"), FieldValue::Bytes(ctx.fpu_ctxt().to_vec()));
    // Concatenating every field's bytes gives back the record.
    let mut again = Vec::new();
    for fl in ctx.fields() {
        match fl.value {
            FieldValue::Bytes(b) => again.extend(b),
            FieldValue::U64 { value, bits } => {
                again.extend(&value.to_le_bytes()[..usize::from(bits) / 8])
            }
            other => panic!("unexpected value {other:?}"),
        }
    }
    assert_eq!(again, ctx.as_bytes());

    let ctx32 = VcpuContext::parse(&hand_built_32()).unwrap();
    assert_eq!(
        field(&ctx32, "user_regs.eip"),
        FieldValue::U64 {
            value: 0xC010_0000,
            bits: 32
        }
    );
    assert_eq!(as_u64(field(&ctx32, "failsafe_callback_cs")), Some(0x2788));
}

#[test]
fn arbitrary_bytes_round_trip_both_sizes() {
    for size in [5168usize, 2800] {
        let raw: Vec<u8> = (0..size).map(|i| (i * 7 + i / 256) as u8).collect();
        let ctx = VcpuContext::parse(&raw).unwrap();
        assert_eq!(ctx.as_bytes(), &raw[..]);
        let rebuilt = match ctx.layout() {
            VcpuLayout::X86_64(c) => VcpuContext::from_x86_64((**c).clone()),
            VcpuLayout::X86_32(c) => VcpuContext::from_x86_32((**c).clone()),
        };
        assert_eq!(rebuilt, ctx);
        assert_eq!(rebuilt.into_bytes(), raw);
    }
}

#[test]
fn wrong_sizes_are_rejected_with_expected_and_found() {
    for len in [0usize, 2799, 2801, 5167, 5169, 4096] {
        let e = VcpuContext::parse(&vec![0; len]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("5168") && msg.contains("2800"), "{msg}");
        assert!(msg.contains(&format!("found {len}")), "{msg}");
    }
    let e = VcpuContext::parse_as(WordSize::W32, &[0; 5168]).unwrap_err();
    assert!(matches!(
        &e.kind,
        ErrorKind::Invalid { expected, found } if expected.starts_with("2800") && found == "5168"
    ));
    assert_eq!(
        check_size(5168, Some(WordSize::W64)).unwrap(),
        WordSize::W64
    );
    assert_eq!(check_size(2800, None).unwrap(), WordSize::W32);
    assert!(check_size(0xFFFF_FFFF, None).is_err());
    assert!(check_size(2800, Some(WordSize::W64)).is_err());
}

#[test]
fn read_from_stream_and_truncation() {
    let raw = hand_built_32();
    let mut input = raw.clone();
    input.extend_from_slice(b"next");
    let mut r = &input[..];
    let ctx = VcpuContext::read_from(&mut r, WordSize::W32).unwrap();
    assert_eq!(ctx.as_bytes(), &raw[..]);
    assert_eq!(r, b"next");

    let mut short = &raw[..1000];
    let e = VcpuContext::read_from(&mut short, WordSize::W32).unwrap_err();
    assert!(e.is_truncation());
    assert_eq!(e.offset, 1000);
}

fn sample_regs() -> VcpuRegisters {
    VcpuRegisters {
        rax: 0xA,
        rbx: 0xB,
        rcx: 0xC,
        rdx: 0xD,
        rsi: 0x51,
        rdi: 0xD1,
        rbp: 0xB9,
        rsp: 0x7000,
        rip: 0x10_0000,
        rflags: 0x202,
        cs: 0x08,
        ss: 0x10,
        ds: 0x18,
        es: 0x20,
        fs: 0x28,
        gs: 0x30,
        cr0: 0x8000_0011,
        cr2: 0xDEAD_0000,
        cr3: 0x0010_1000,
        cr4: 0x20,
        debugreg: [1, 2, 3, 4, 0, 0, 0xFFFF_0FF0, 0x400],
        fpu: std::array::from_fn(|i| (i as u8).wrapping_mul(3)),
        ..Default::default()
    }
}

#[test]
fn from_registers_x86_64_places_live_state_and_zeroes_the_rest() {
    let mut regs = sample_regs();
    regs.r8 = 0x88;
    regs.r15 = 0xFF;
    regs.rip = 0xFFFF_FFFF_8100_0000;
    let ctx = VcpuContext::from_registers(WordSize::W64, &regs).unwrap();
    let b = ctx.as_bytes();
    assert_eq!(b.len(), 5168);
    let rd = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
    assert_eq!(&b[..512], &regs.fpu[..]);
    assert_eq!(rd(512), 0x21, "VGCF_i387_valid | VGCF_online");
    assert_eq!(rd(520), 0xFF); // r15
    assert_eq!(rd(520 + 72), 0x88); // r8
    assert_eq!(rd(520 + 80), 0xA); // rax
    assert_eq!(rd(520 + 128), 0xFFFF_FFFF_8100_0000);
    assert_eq!(u16::from_le_bytes([b[520 + 136], b[520 + 137]]), 0x08);
    assert_eq!(rd(520 + 144), 0x202);
    assert_eq!(rd(520 + 152), 0x7000);
    assert_eq!(u16::from_le_bytes([b[520 + 192], b[520 + 193]]), 0x30);
    assert_eq!(rd(4984), 0x8000_0011);
    assert_eq!(rd(4984 + 8), 0, "CR1 stays zero");
    assert_eq!(rd(4984 + 16), 0xDEAD_0000);
    assert_eq!(rd(4984 + 24), 0x0010_1000);
    assert_eq!(rd(4984 + 32), 0x20);
    assert_eq!(rd(5048 + 48), 0xFFFF_0FF0);
    // Nothing between user_regs and ctrlreg is set (traps, ldt, gdt).
    assert!(b[720..4984].iter().all(|&x| x == 0));
    // Callbacks, vm_assist and the bases are zero.
    assert!(b[5112..].iter().all(|&x| x == 0));
    assert_eq!(ctx.registers(), regs);
}

#[test]
fn from_registers_x86_32() {
    let mut regs = sample_regs();
    regs.online = false;
    let ctx = VcpuContext::from_registers(WordSize::W32, &regs).unwrap();
    let b = ctx.as_bytes();
    assert_eq!(b.len(), 2800);
    let rd = |off: usize| u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
    assert_eq!(rd(512), 0x1, "only VGCF_i387_valid");
    assert_eq!(rd(516), 0xB); // ebx
    assert_eq!(rd(516 + 24), 0xA); // eax
    assert_eq!(rd(516 + 32), 0x10_0000); // eip
    assert_eq!(rd(516 + 44), 0x7000); // esp
    assert_eq!(rd(2716), 0x8000_0011);
    assert_eq!(rd(2716 + 12), 0x0010_1000);
    assert_eq!(rd(2748 + 28), 0x400);
    assert!(b[584..2716].iter().all(|&x| x == 0));
    assert_eq!(ctx.registers(), regs);

    regs.r9 = 1;
    let e = VcpuContext::from_registers(WordSize::W32, &regs).unwrap_err();
    assert!(e.to_string().contains("r9"), "{e}");
    regs.r9 = 0;
    regs.rip = 0x1_0000_0000;
    let e = VcpuContext::from_registers(WordSize::W32, &regs).unwrap_err();
    assert!(e.to_string().contains("eip"), "{e}");
}
