//! `--elf`: an ELF64 `ET_CORE` for x86-64, the form gdb, crash, drgn and
//! pyelftools read.
//!
//! * One `PT_LOAD` per run of consecutive present pfns, `p_paddr` the
//!   guest physical address and `p_vaddr` the same value (gdb addresses a
//!   core's memory by `p_vaddr`; with no page tables walked, the identity
//!   lets `x/gx ADDR` read guest physical memory), `p_filesz == p_memsz`,
//!   file offsets page-aligned. More than 65534 runs use the `PN_XNUM`
//!   escape (the count in section header 0's `sh_info`), as Linux's own
//!   cores do.
//! * One `PT_NOTE` holding, as QEMU's `dump-guest-memory` lays them out,
//!   an `NT_PRSTATUS` note (name `CORE`) per vCPU, then a `QEMU` note
//!   (type 0, `QEMUCPUState`) per vCPU with control registers, segment
//!   bases, limits and flags, GDT and IDT, so that tools can find CR3.
//!
//! Headers are written with the `object` crate; the two note payloads are
//! Linux's and QEMU's structs, which no crate offers, written with binrw
//! field by field (layouts in docs/extract.md, with their sources).

use binrw::BinWrite;
use object::elf;
use object::write::elf::{FileHeader, ProgramHeader, SectionHeader, Writer};
use object::{Endianness, LittleEndian as LE, U32};

use hvm_format::{Context, Error, ErrorKind, PAGE_SIZE};

use super::cpu::{CpuState, Segment, Vcpu};
use super::raw::address;
use super::{Failure, Gather, Memory, Sink};

/// Linux's x86-64 `struct elf_prstatus` (336 bytes): signal info, pids,
/// times (all zero here), `pr_reg` (an `elf_gregset_t`, the 27 registers
/// of `struct user_regs_struct` in its order), `pr_fpvalid`.
#[derive(BinWrite)]
#[bw(little)]
struct PrStatus {
    si_signo: i32,
    si_code: i32,
    si_errno: i32,
    pr_cursig: i16,
    pad0: u16,
    pr_sigpend: u64,
    pr_sighold: u64,
    pr_pid: i32,
    pr_ppid: i32,
    pr_pgrp: i32,
    pr_sid: i32,
    /// `pr_utime`, `pr_stime`, `pr_cutime`, `pr_cstime`: four `timeval`s.
    times: [u64; 8],
    pr_reg: [u64; 27],
    pr_fpvalid: i32,
    pad1: u32,
}

/// Size of the x86-64 `elf_prstatus` note payload (`NT_PRSTATUS`).
pub const PRSTATUS_LEN: usize = 336;
/// Byte offset of `pr_reg` in that payload.
pub const PR_REG_OFFSET: usize = 112;

impl PrStatus {
    fn of(id: u32, s: &CpuState) -> Self {
        let sel = |g: &Segment| u64::from(g.selector);
        PrStatus {
            si_signo: 0,
            si_code: 0,
            si_errno: 0,
            pr_cursig: 0,
            pad0: 0,
            pr_sigpend: 0,
            pr_sighold: 0,
            // gdb names each thread by its pid: vCPU n is "LWP n+1" (a
            // pid of 0 reads as "no thread" to some tools).
            pr_pid: i32::try_from(id).unwrap_or(i32::MAX - 1).saturating_add(1),
            pr_ppid: 0,
            pr_pgrp: 0,
            pr_sid: 0,
            times: [0; 8],
            pr_reg: [
                s.r15,
                s.r14,
                s.r13,
                s.r12,
                s.rbp,
                s.rbx,
                s.r11,
                s.r10,
                s.r9,
                s.r8,
                s.rax,
                s.rcx,
                s.rdx,
                s.rsi,
                s.rdi,
                0, // orig_rax, as QEMU writes it
                s.rip,
                sel(&s.cs),
                s.rflags,
                s.rsp,
                sel(&s.ss),
                s.fs.base,
                s.gs.base,
                sel(&s.ds),
                sel(&s.es),
                sel(&s.fs),
                sel(&s.gs),
            ],
            pr_fpvalid: 0,
            pad1: 0,
        }
    }
}

/// QEMU's `QEMUCPUSegment` (24 bytes).
#[derive(BinWrite)]
#[bw(little)]
struct QemuSegment {
    selector: u32,
    limit: u32,
    flags: u32,
    pad: u32,
    base: u64,
}

impl From<&Segment> for QemuSegment {
    fn from(s: &Segment) -> Self {
        QemuSegment {
            selector: s.selector,
            limit: s.limit,
            flags: s.flags,
            pad: 0,
            base: s.base,
        }
    }
}

/// QEMU's `QEMUCPUState` (440 bytes), version 1, with `kernel_gs_base`.
#[derive(BinWrite)]
#[bw(little)]
struct QemuCpuState {
    version: u32,
    size: u32,
    /// rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8..r15, rip, rflags.
    regs: [u64; 18],
    /// cs, ds, es, fs, gs, ss, ldt, tr, gdt, idt.
    segs: [QemuSegment; 10],
    cr: [u64; 5],
    kernel_gs_base: u64,
}

/// Size of the `QEMU` CPU-state note payload (`QEMUCPUState`).
pub const QEMU_CPU_STATE_LEN: usize = 440;
/// `QEMU_CPUSTATE_VERSION`.
pub const QEMU_CPU_STATE_VERSION: u32 = 1;

impl QemuCpuState {
    fn of(s: &CpuState) -> Self {
        QemuCpuState {
            version: QEMU_CPU_STATE_VERSION,
            size: QEMU_CPU_STATE_LEN as u32,
            regs: [
                s.rax, s.rbx, s.rcx, s.rdx, s.rsi, s.rdi, s.rsp, s.rbp, s.r8, s.r9, s.r10, s.r11,
                s.r12, s.r13, s.r14, s.r15, s.rip, s.rflags,
            ],
            segs: [
                (&s.cs).into(),
                (&s.ds).into(),
                (&s.es).into(),
                (&s.fs).into(),
                (&s.gs).into(),
                (&s.ss).into(),
                (&s.ldt).into(),
                (&s.tr).into(),
                (&s.gdt).into(),
                (&s.idt).into(),
            ],
            cr: s.cr,
            kernel_gs_base: s.kernel_gs_base,
        }
    }
}

fn encode(v: &impl for<'a> BinWrite<Args<'a> = ()>) -> Vec<u8> {
    let mut c = std::io::Cursor::new(Vec::new());
    // Writing plain integers into a Vec cannot fail.
    let _ = v.write_le(&mut c);
    c.into_inner()
}

/// One ELF note: header, name (NUL-terminated, padded to 4), descriptor
/// (padded to 4).
fn note(out: &mut Vec<u8>, name: &[u8], kind: u32, desc: &[u8]) {
    let h = elf::NoteHeader64::<LE> {
        n_namesz: U32::new(LE, name.len() as u32 + 1),
        n_descsz: U32::new(LE, desc.len() as u32),
        n_type: U32::new(LE, kind),
    };
    out.extend_from_slice(object::pod::bytes_of(&h));
    out.extend_from_slice(name);
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The `PT_NOTE` contents: `NT_PRSTATUS` per vCPU, then a `QEMU` note per
/// vCPU (QEMU's order).
pub(crate) fn notes(vcpus: &[Vcpu]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in vcpus {
        note(
            &mut out,
            b"CORE",
            elf::NT_PRSTATUS,
            &encode(&PrStatus::of(v.id, &v.state)),
        );
    }
    for v in vcpus {
        note(&mut out, b"QEMU", 0, &encode(&QemuCpuState::of(&v.state)));
    }
    out
}

/// ELF header, program headers (and section header 0 under `PN_XNUM`) and
/// `notes`, padded to the page-aligned offset where the first run's data
/// starts. `runs` are `(first pfn, pages)`; `entry` names an image offset
/// for errors.
pub(crate) fn headers(runs: &[(u64, u64)], notes: &[u8], entry: u64) -> Result<Vec<u8>, Error> {
    let too_many = || {
        Error::new(
            entry,
            Context::root().field("pages"),
            ErrorKind::Invalid {
                expected: "fewer than 2^32 runs of pages".into(),
                found: format!("{} runs", runs.len()),
            },
        )
    };
    let phnum = u32::try_from(runs.len())
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(too_many)?;
    let xnum = phnum >= u32::from(elf::PN_XNUM);
    let mut buf = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut buf);
    w.reserve_file_header();
    w.reserve_program_headers(phnum);
    if xnum {
        w.reserve_null_section_index();
        w.reserve_section_headers();
    }
    let note_off = w.reserve(notes.len(), 4) as u64;
    let page = PAGE_SIZE as u64;
    let data_start = (w.reserved_len() as u64).next_multiple_of(page);
    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_CORE,
        e_machine: elf::EM_X86_64,
        e_entry: 0,
        e_flags: 0,
    })
    .map_err(|e| {
        Error::new(
            entry,
            Context::root(),
            ErrorKind::Io(std::io::Error::other(e.to_string())),
        )
    })?;
    w.write_align_program_headers();
    w.write_program_header(&ProgramHeader {
        p_type: elf::PT_NOTE,
        p_flags: 0,
        p_offset: note_off,
        p_vaddr: 0,
        p_paddr: 0,
        p_filesz: notes.len() as u64,
        p_memsz: 0,
        p_align: 4,
    });
    let mut offset = data_start;
    for &(first, n) in runs {
        let paddr = address(first, entry)?;
        let len = n.checked_mul(page).ok_or_else(too_many)?;
        w.write_program_header(&ProgramHeader {
            p_type: elf::PT_LOAD,
            p_flags: elf::PF_R | elf::PF_W | elf::PF_X,
            p_offset: offset,
            p_vaddr: paddr,
            p_paddr: paddr,
            p_filesz: len,
            p_memsz: len,
            p_align: page,
        });
        offset = offset.checked_add(len).ok_or_else(too_many)?;
    }
    if xnum {
        // object leaves section 0's sh_info (the real e_phnum) at 0.
        w.write_align(8);
        w.write_section_header(&SectionHeader {
            name: None,
            sh_type: elf::SHT_NULL,
            sh_flags: 0,
            sh_addr: 0,
            sh_offset: 0,
            sh_size: 0,
            sh_link: 0,
            sh_info: phnum,
            sh_addralign: 0,
            sh_entsize: 0,
        });
    }
    w.write_align(4);
    w.write(notes);
    if xnum {
        // e_phnum (bytes 56–57) says "see section 0".
        buf[56..58].copy_from_slice(&elf::PN_XNUM.to_le_bytes());
    }
    let data_start = usize::try_from(data_start).map_err(|_| too_many())?;
    buf.resize(data_start, 0);
    Ok(buf)
}

/// Write the core; the file's length.
pub(crate) fn write<S: Sink>(m: &Memory<'_>, out: &mut S) -> Result<u64, Failure> {
    let entry = m.pages.first().map_or(0, |c| c.offset);
    let head = headers(m.runs, &notes(m.vcpus), entry)?;
    let mut g = Gather::new(out, 0);
    g.put(0, &head)?;
    let mut at = head.len() as u64;
    m.for_each_page(|_, page| {
        g.put(at, page)?;
        at += PAGE_SIZE as u64;
        Ok(())
    })?;
    g.finish()?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::read::elf::{FileHeader as _, ProgramHeader as _};

    #[test]
    fn note_payloads_have_their_c_sizes() {
        let s = CpuState {
            rip: 0x1234,
            rsp: 0x5678,
            r15: 0xF15,
            ..Default::default()
        };
        let p = encode(&PrStatus::of(3, &s));
        assert_eq!(p.len(), PRSTATUS_LEN);
        let reg = |i: usize| {
            u64::from_le_bytes(
                p[PR_REG_OFFSET + 8 * i..PR_REG_OFFSET + 8 * i + 8]
                    .try_into()
                    .unwrap(),
            )
        };
        // user_regs_struct: r15 first, rip 16th, rsp 19th (from 0).
        assert_eq!((reg(0), reg(16), reg(19)), (0xF15, 0x1234, 0x5678));
        assert_eq!(i32::from_le_bytes(p[32..36].try_into().unwrap()), 4);
        let q = encode(&QemuCpuState::of(&s));
        assert_eq!(q.len(), QEMU_CPU_STATE_LEN);
    }

    /// More runs than e_phnum holds: the PN_XNUM escape, which object's
    /// reader (like readelf and gdb) follows to the real count.
    #[test]
    fn many_runs_use_pn_xnum() {
        for n in [3u64, 70_000] {
            let runs: Vec<(u64, u64)> = (0..n).map(|i| (2 * i, 1)).collect();
            let head = headers(&runs, &notes(&[]), 0).unwrap();
            let h = elf::FileHeader64::<LE>::parse(&head[..]).unwrap();
            let ph = h.program_headers(LE, &head[..]).unwrap();
            assert_eq!(ph.len() as u64, n + 1);
            let last = ph.last().unwrap();
            assert_eq!(last.p_paddr(LE), 2 * (n - 1) * 4096);
            assert_eq!(last.p_offset(LE), head.len() as u64 + (n - 1) * 4096);
            assert_eq!(head.len() % 4096, 0);
        }
    }
}
