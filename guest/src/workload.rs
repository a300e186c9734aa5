//! The built-in workload: a deterministic page-writing loop and its reference model.
//!
//! Each vCPU runs the same code with its own parameters in registers, so the code is identical
//! for every configuration and a restored VM needs nothing but RAM and vCPU state:
//!
//! | register | meaning |
//! |---|---|
//! | rbx | xorshift64* state |
//! | rsi | working-set base (guest-physical = virtual, identity map) |
//! | rdi | working-set size in pages |
//! | r8  | step counter |
//! | r9  | mailbox address |
//! | r10 | writes per step |
//! | r11 | pacing: iterations of an empty countdown loop per step |
//! | r14 | doorbell address |
//! | rax, rcx, rdx, r12, r13 | scratch, deterministic at every stop |
//!
//! One step: `writes_per_step` times advance the PRNG, write `out ^ step` to the qword at
//! page `(out >> 32) % pages`, byte offset `(out >> 16) & 0xff8`; then count `r11` down; then
//! increment the step counter and publish it in the mailbox. Before each step the program
//! compares the counter with the mailbox target; at the target it writes the counter to its
//! doorbell (an MMIO exit the host reads as "reached target") and loops back, so it neither
//! halts (a CPL-3 `hlt` triple-faults, and AMD's KVM resets the vCPU on shutdown) nor depends on
//! timing. Memory and registers at a stop are a pure function of (parameters, step).

use std::collections::{BTreeMap, BTreeSet};

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use crate::error::{Error, Result};
use crate::layout::{self, PAGE_SIZE};

/// Multiplier of xorshift64*.
const XORSHIFT_MUL: u64 = 0x2545_F491_4F6C_DD1D;
/// Replaces a zero seed: xorshift's state must never be zero.
const ZERO_SEED_STATE: u64 = 0x9E37_79B9_7F4A_7C15;

/// The assembled program and the addresses the host needs to know.
#[derive(Debug, Clone)]
pub struct Program {
    /// Machine code, loaded at `layout::SYS_BASE + layout::CODE_OFFSET`.
    pub code: Vec<u8>,
    /// Entry point (guest-virtual = guest-physical).
    pub entry: u64,
    /// Address of the instruction after the doorbell write: rip at every stop.
    pub after_doorbell: u64,
}

/// Assembles the workload at its load address.
pub(crate) fn assemble() -> Result<Program> {
    let asm_err = |e: IcedError| Error::Asm(e.to_string());
    let base = layout::SYS_BASE + layout::CODE_OFFSET;
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let mut top = a.create_label();
    let mut body = a.create_label();
    let mut after_bell = a.create_label();
    let mut wloop = a.create_label();
    let mut spin = a.create_label();
    let mut spun = a.create_label();
    (|| -> std::result::Result<(), IcedError> {
        a.set_label(&mut top)?;
        a.cmp(r8, qword_ptr(r9 + layout::MAILBOX_TARGET as i32))?;
        a.jb(body)?;
        a.mov(qword_ptr(r14), r8)?;
        a.set_label(&mut after_bell)?;
        a.jmp(top)?;

        a.set_label(&mut body)?;
        a.mov(r12, r10)?;
        a.set_label(&mut wloop)?;
        a.mov(rax, rbx)?;
        a.shr(rax, 12)?;
        a.xor(rbx, rax)?;
        a.mov(rax, rbx)?;
        a.shl(rax, 25)?;
        a.xor(rbx, rax)?;
        a.mov(rax, rbx)?;
        a.shr(rax, 27)?;
        a.xor(rbx, rax)?;
        a.mov(r13, XORSHIFT_MUL)?;
        a.imul_2(r13, rbx)?;
        a.mov(rax, r13)?;
        a.shr(rax, 32)?;
        a.xor(edx, edx)?;
        a.div(rdi)?;
        a.shl(rdx, 12)?;
        a.mov(rcx, r13)?;
        a.shr(rcx, 16)?;
        a.and(ecx, 0xff8)?;
        a.add(rcx, rdx)?;
        a.mov(rax, r13)?;
        a.xor(rax, r8)?;
        a.mov(qword_ptr(rsi + rcx), rax)?;
        a.dec(r12)?;
        a.jnz(wloop)?;

        a.mov(r12, r11)?;
        a.set_label(&mut spin)?;
        a.test(r12, r12)?;
        a.jz(spun)?;
        a.dec(r12)?;
        a.jmp(spin)?;
        a.set_label(&mut spun)?;
        a.inc(r8)?;
        a.mov(qword_ptr(r9 + layout::MAILBOX_PROGRESS as i32), r8)?;
        a.jmp(top)?;
        Ok(())
    })()
    .map_err(asm_err)?;
    let res = a
        .assemble_options(base, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .map_err(asm_err)?;
    let after_doorbell = res.label_ip(&after_bell).map_err(asm_err)?;
    let entry = res.label_ip(&top).map_err(asm_err)?;
    let code = res.inner.code_buffer;
    if code.len() as u64 > layout::MAILBOX_OFFSET - layout::CODE_OFFSET {
        return Err(Error::Asm(format!(
            "code is {} bytes, too large",
            code.len()
        )));
    }
    Ok(Program {
        code,
        entry,
        after_doorbell,
    })
}

/// One vCPU's stream: what it writes, where, and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// PRNG seed; distinct per vCPU gives distinct streams.
    pub seed: u64,
    /// First guest page (gfn) of the working set.
    pub base_page: u64,
    /// Working-set size in pages (≥ 1).
    pub pages: u64,
    /// Qword writes per step (≥ 1).
    pub writes_per_step: u64,
    /// Pacing: iterations of an empty countdown loop per step (0 = flat out). Sets the rate
    /// without reading a clock, so contents stay a pure function of the step.
    pub spin: u64,
}

/// The general-purpose registers the workload defines, in `kvm_regs` order.
// Each field is the x86-64 register of the same name: a doc line per field would repeat it.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkloadRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl WorkloadRegs {
    /// Reads the GPRs out of KVM's register file.
    pub fn from_kvm(r: &kvm_bindings::kvm_regs) -> Self {
        WorkloadRegs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
        }
    }

    /// KVM's register file with these GPRs, `rip` and `rflags`.
    pub fn to_kvm(&self, rip: u64, rflags: u64) -> kvm_bindings::kvm_regs {
        kvm_bindings::kvm_regs {
            rax: self.rax,
            rbx: self.rbx,
            rcx: self.rcx,
            rdx: self.rdx,
            rsi: self.rsi,
            rdi: self.rdi,
            rsp: self.rsp,
            rbp: self.rbp,
            r8: self.r8,
            r9: self.r9,
            r10: self.r10,
            r11: self.r11,
            r12: self.r12,
            r13: self.r13,
            r14: self.r14,
            r15: self.r15,
            rip,
            rflags,
        }
    }
}

/// What a vCPU's stream has produced after some steps, stopped at its doorbell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Registers at the stop.
    pub regs: WorkloadRegs,
    /// rflags at the stop: set by `cmp r8, target` with r8 == target.
    pub rflags: u64,
    /// Contents of every page the stream has written (gfn → page); all other pages of the
    /// working set are untouched (zero in a fresh VM).
    pub pages: BTreeMap<u64, Vec<u8>>,
}

/// rflags after `cmp` of equal operands: ZF, PF and the reserved bit 1.
pub(crate) const RFLAGS_AT_STOP: u64 = 0x46;

impl Workload {
    /// A workload over `pages` pages starting at `base_page`, one write per step, unpaced.
    pub fn new(seed: u64, base_page: u64, pages: u64) -> Self {
        Workload {
            seed,
            base_page,
            pages,
            writes_per_step: 1,
            spin: 0,
        }
    }

    /// Checks the parameters against a RAM size (in pages).
    pub fn validate(&self, ram_pages: u64) -> Result<()> {
        if self.pages == 0 || self.writes_per_step == 0 {
            return Err(Error::Config(
                "workload needs at least one page and one write per step".into(),
            ));
        }
        let end = self.base_page.checked_add(self.pages);
        if end.is_none_or(|e| e > ram_pages) {
            return Err(Error::Config(format!(
                "working set {}+{} pages exceeds RAM of {} pages",
                self.base_page, self.pages, ram_pages
            )));
        }
        Ok(())
    }

    /// The PRNG state before the first step.
    pub(crate) fn initial_state(&self) -> u64 {
        if self.seed == 0 {
            ZERO_SEED_STATE
        } else {
            self.seed
        }
    }

    /// Registers the host loads before the first step on vCPU `vcpu`.
    pub fn initial_regs(&self, vcpu: usize) -> WorkloadRegs {
        WorkloadRegs {
            rbx: self.initial_state(),
            rsi: self.base_page * PAGE_SIZE,
            rdi: self.pages,
            r9: layout::mailbox_gpa(vcpu),
            r10: self.writes_per_step,
            r11: self.spin,
            r14: layout::doorbell_gpa(vcpu),
            ..WorkloadRegs::default()
        }
    }

    /// Runs the model and calls `write(step, gfn, byte_offset, value)` for every write.
    fn simulate(
        &self,
        vcpu: usize,
        steps: u64,
        mut write: impl FnMut(u64, u64, u64, u64),
    ) -> WorkloadRegs {
        let mut r = self.initial_regs(vcpu);
        let pages = self.pages.max(1);
        for step in 0..steps {
            for _ in 0..self.writes_per_step {
                let mut x = r.rbx;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                r.rbx = x;
                let out = x.wrapping_mul(XORSHIFT_MUL);
                let page = (out >> 32) % pages;
                let off = (out >> 16) & 0xff8;
                r.r13 = out;
                r.rdx = page << 12;
                r.rcx = off + (page << 12);
                r.rax = out ^ step;
                write(step, self.base_page + page, off, r.rax);
            }
            r.r12 = 0;
            r.r8 = step + 1;
        }
        r
    }

    /// The state of vCPU `vcpu`'s stream stopped at step `steps`, for verifying the real guest.
    pub fn expected_after(&self, vcpu: usize, steps: u64) -> Expected {
        let mut pages: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let regs = self.simulate(vcpu, steps, |_, gfn, off, val| {
            let page = pages
                .entry(gfn)
                .or_insert_with(|| vec![0u8; PAGE_SIZE as usize]);
            let o = off as usize;
            if let Some(dst) = page.get_mut(o..o + 8) {
                dst.copy_from_slice(&val.to_le_bytes());
            }
        });
        Expected {
            regs,
            rflags: RFLAGS_AT_STOP,
            pages,
        }
    }

    /// The pages written by steps `from..to` (the dirty set of that window).
    pub fn pages_written(&self, from: u64, to: u64) -> BTreeSet<u64> {
        let mut set = BTreeSet::new();
        self.simulate(0, to, |step, gfn, _, _| {
            if step >= from {
                set.insert(gfn);
            }
        });
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_assembles_and_fits() {
        let p = assemble().expect("assemble");
        assert!(p.code.len() > 40 && p.code.len() < 512, "{}", p.code.len());
        assert_eq!(p.entry, layout::SYS_BASE + layout::CODE_OFFSET);
        assert!(p.after_doorbell > p.entry);
    }

    #[test]
    fn model_is_deterministic_and_stays_in_working_set() {
        let w = Workload {
            seed: 7,
            base_page: 100,
            pages: 37,
            writes_per_step: 3,
            spin: 0,
        };
        let a = w.expected_after(0, 500);
        let b = w.expected_after(0, 500);
        assert_eq!(a, b);
        assert!(a.pages.keys().all(|g| (100..137).contains(g)));
        assert_eq!(a.regs.r8, 500);
        // 1500 writes over 37 pages touch (almost surely) all of them.
        assert_eq!(a.pages.len(), 37);
        let window = w.pages_written(0, 500);
        assert_eq!(window, a.pages.keys().copied().collect());
    }

    #[test]
    fn xorshift_matches_published_sequence_start() {
        // xorshift64* with state 1: first output is 0x47E4CE4B896CDD1D (Vigna's reference).
        let w = Workload::new(1, 0, 1);
        let e = w.expected_after(0, 1);
        assert_eq!(e.regs.r13, 0x47E4_CE4B_896C_DD1D);
    }

    #[test]
    fn validate_rejects_out_of_ram() {
        assert!(Workload::new(1, 10, 10).validate(19).is_err());
        assert!(Workload::new(1, 10, 10).validate(20).is_ok());
        assert!(Workload::new(1, 0, 0).validate(20).is_err());
    }
}
