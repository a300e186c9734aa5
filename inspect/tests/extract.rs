//! `extract` checked against what the images hold and by the tools people
//! read memory with.
//!
//! Without external tools: every golden image's raw file holds, at every
//! pfn, the final copy the golden spec says it sent (computed from the
//! spec, not by our reader) and holes elsewhere, allocating no more than
//! its pages; the ELF core's PT_LOADs and the LiME ranges hold the same
//! bytes (parsed here with `object` and by hand); `--range`, pipes, v2,
//! damaged images and the output rules.
//!
//! With the prerequisite `forensic-tools` (binutils, gdb, and pyelftools
//! and volatility3 in target/forensic-venv, installed by scripts/setup.sh
//! with HVM_SETUP_FORENSIC=1): `readelf -l -n` lists the segments and
//! notes, gdb shows each vCPU thread's RIP and RSP as `show vcpu` does,
//! pyelftools reads a known page at its physical address and CR3 from the
//! QEMU note, and volatility3 reads the same page from the raw and LiME
//! files (tests/forensic/read.py).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hvm_format::layout::build_magic_pfns;
use hvm_format::PAGE_SIZE;
use hvm_tests::golden::{page, specs, Spec};
use object::read::elf::{FileHeader as _, ProgramHeader as _};
use object::LittleEndian as LE;
use serde_json::Value;

const FORENSIC: &str = hvm_tests::prereq::FORENSIC_TOOLS;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hvm-inspect")
}

fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/golden/{name}.img"))
}

/// The final memory of a golden spec, from the spec alone: each pass sends
/// the pfns its filter picks (VGA hole, magic pfns and XTAB pfns never), a
/// later pass's copy replaces an earlier one, the verify resend changes
/// nothing.
fn final_memory(spec: &Spec) -> BTreeMap<u64, Vec<u8>> {
    let size = spec.memory_mib * 256;
    let (ioreq, store, bufioreq) = build_magic_pfns(spec.memory_mib).unwrap();
    let skip = |p: u64| (0xA0..0xC0).contains(&p) || p == ioreq || p == store || p == bufioreq;
    let mut mem = BTreeMap::new();
    for (k, pass) in spec.passes.iter().enumerate() {
        for p in 0..size {
            if !skip(p) && !spec.xtab.contains(&p) && p % pass.modulus == pass.residue {
                mem.insert(p, page(spec.seed, p, k));
            }
        }
    }
    mem
}

fn runs_of(mem: &BTreeMap<u64, Vec<u8>>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &p in mem.keys() {
        match out.last_mut() {
            Some((a, n)) if *a + *n == p => *n += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> String {
        self.0.path().join(name).to_string_lossy().into_owned()
    }
}

fn extract(image: &str, flag: &str, out: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "extract", image, flag, out];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{args:?}: {o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Check a raw file against `mem` at every pfn up to `pfns`.
fn check_raw(raw: &[u8], mem: &BTreeMap<u64, Vec<u8>>, what: &str) {
    let last = mem.keys().next_back().copied().unwrap_or(0);
    assert_eq!(
        raw.len() as u64,
        (last + 1) * PAGE_SIZE as u64,
        "{what}: length"
    );
    for (p, chunk) in raw.chunks(PAGE_SIZE).enumerate() {
        match mem.get(&(p as u64)) {
            Some(want) => assert!(chunk == want.as_slice(), "{what}: pfn {p:#x} differs"),
            None => assert!(
                chunk.iter().all(|b| *b == 0),
                "{what}: hole pfn {p:#x} not zero"
            ),
        }
    }
}

/// The ELF core's PT_LOADs are exactly the runs of `mem`, with its bytes.
fn check_elf(core: &[u8], mem: &BTreeMap<u64, Vec<u8>>, vcpus: usize, what: &str) {
    let h = object::elf::FileHeader64::<LE>::parse(core).unwrap();
    assert_eq!(h.e_type.get(LE), object::elf::ET_CORE);
    assert_eq!(h.e_machine.get(LE), object::elf::EM_X86_64);
    let ph = h.program_headers(LE, core).unwrap();
    let loads: Vec<_> = ph
        .iter()
        .filter(|p| p.p_type(LE) == object::elf::PT_LOAD)
        .collect();
    let runs = runs_of(mem);
    assert_eq!(loads.len(), runs.len(), "{what}: one PT_LOAD per run");
    for (l, (first, n)) in loads.iter().zip(&runs) {
        let paddr = first * PAGE_SIZE as u64;
        assert_eq!(l.p_paddr(LE), paddr, "{what}");
        assert_eq!(l.p_vaddr(LE), paddr, "{what}");
        assert_eq!(l.p_filesz(LE), n * PAGE_SIZE as u64, "{what}");
        assert_eq!(l.p_memsz(LE), l.p_filesz(LE), "{what}");
        let data = l.data(LE, core).unwrap();
        for (k, chunk) in data.chunks(PAGE_SIZE).enumerate() {
            assert!(
                chunk == mem[&(first + k as u64)].as_slice(),
                "{what}: pfn {:#x}",
                first + k as u64
            );
        }
    }
    let notes: Vec<_> = ph
        .iter()
        .filter(|p| p.p_type(LE) == object::elf::PT_NOTE)
        .collect();
    assert_eq!(notes.len(), 1, "{what}");
    let mut it = notes[0].notes(LE, core).unwrap().unwrap();
    let (mut prstatus, mut qemu) = (0, 0);
    while let Some(n) = it.next().unwrap() {
        match (n.name(), n.n_type(LE)) {
            (b"CORE", object::elf::NT_PRSTATUS) => {
                assert_eq!(n.desc().len(), 336);
                prstatus += 1
            }
            (b"QEMU", 0) => {
                assert_eq!(n.desc().len(), 440);
                qemu += 1
            }
            other => panic!("{what}: unexpected note {other:?}"),
        }
    }
    assert_eq!((prstatus, qemu), (vcpus, vcpus), "{what}");
}

/// LiME: a header per run (magic, version 1, start, inclusive end), then
/// the run's bytes.
fn check_lime(lime: &[u8], mem: &BTreeMap<u64, Vec<u8>>, what: &str) {
    let mut at = 0usize;
    let mut seen = BTreeMap::new();
    let u32_at = |o: usize| u32::from_le_bytes(lime[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(lime[o..o + 8].try_into().unwrap());
    let mut ranges = 0;
    while at < lime.len() {
        assert_eq!(u32_at(at), 0x4C69_4D45, "{what}: magic at {at}");
        assert_eq!(u32_at(at + 4), 1, "{what}: version");
        let (s, e) = (u64_at(at + 8), u64_at(at + 16));
        assert_eq!(&lime[at + 24..at + 32], &[0; 8]);
        let len = (e - s + 1) as usize;
        at += 32;
        for (k, chunk) in lime[at..at + len].chunks(PAGE_SIZE).enumerate() {
            seen.insert(s / PAGE_SIZE as u64 + k as u64, chunk.to_vec());
        }
        at += len;
        ranges += 1;
    }
    assert_eq!(ranges, runs_of(mem).len(), "{what}: one range per run");
    assert!(seen == *mem, "{what}: LiME pages differ");
}

/// Every golden image, every format: the final copy of every pfn, holes
/// elsewhere. Catches: the first copy written instead of the last (the
/// live image resends pages in passes 1 and 2), verify copies written over
/// the final ones (seed32-verify), an off-by-one in runs or headers.
#[test]
fn every_format_holds_the_final_copy_of_every_pfn() {
    let dir = Dir::new();
    for spec in specs() {
        let image = golden(spec.name);
        let image = image.to_str().unwrap();
        let mem = final_memory(&spec);
        assert!(!mem.is_empty());
        let raw = dir.path(&format!("{}.raw", spec.name));
        let r = extract(image, "--raw", &raw, &[]);
        assert_eq!(r["pages"], mem.len() as u64, "{}", spec.name);
        let bytes = std::fs::read(&raw).unwrap();
        check_raw(&bytes, &mem, spec.name);
        // Holes are not written: the blocks allocated are the pages plus
        // at most 64 KiB of filesystem overhead.
        let meta = std::fs::metadata(&raw).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let allocated = meta.blocks() * 512;
        let pages = mem.len() as u64 * PAGE_SIZE as u64;
        assert!(
            allocated <= pages + (64 << 10),
            "{}: {allocated} bytes allocated for {pages} bytes of pages",
            spec.name
        );
        let core = dir.path(&format!("{}.core", spec.name));
        extract(image, "--elf", &core, &[]);
        check_elf(
            &std::fs::read(&core).unwrap(),
            &mem,
            spec.vcpus as usize,
            spec.name,
        );
        let lime = dir.path(&format!("{}.lime", spec.name));
        extract(image, "--lime", &lime, &[]);
        check_lime(&std::fs::read(&lime).unwrap(), &mem, spec.name);
    }
}

/// `--range START-END` keeps the pfns in `[START, END)` in every format;
/// the raw file still puts them at their addresses.
#[test]
fn range_limits_every_format() {
    let dir = Dir::new();
    let spec = specs()
        .into_iter()
        .find(|s| s.name == "seed64-live-xend")
        .unwrap();
    let image = golden(spec.name);
    let image = image.to_str().unwrap();
    let all = final_memory(&spec);
    // A range that starts and ends on present pfns: both ends matter.
    let keys: Vec<u64> = all.keys().copied().collect();
    let (a, b) = (keys[3], keys[9]);
    let mem: BTreeMap<u64, Vec<u8>> = all.range(a..b).map(|(k, v)| (*k, v.clone())).collect();
    assert_eq!(mem.len(), 6);
    let range = format!("{:#x}-{:#x}", a * 4096, b * 4096);
    let raw = dir.path("r.raw");
    let r = extract(image, "--raw", &raw, &["--range", &range]);
    assert_eq!(r["pages"], 6);
    check_raw(&std::fs::read(&raw).unwrap(), &mem, "raw --range");
    let core = dir.path("r.core");
    extract(image, "--elf", &core, &["--range", &range]);
    check_elf(&std::fs::read(&core).unwrap(), &mem, 2, "elf --range");
    let lime = dir.path("r.lime");
    extract(image, "--lime", &lime, &["--range", &range]);
    check_lime(&std::fs::read(&lime).unwrap(), &mem, "lime --range");
    // A range with no page: an empty raw file, and a warning.
    let (x, y) = (keys[0] + 1, keys[1]);
    assert!(x < y);
    let empty = dir.path("e.raw");
    let r = extract(
        image,
        "--raw",
        &empty,
        &["--range", &format!("{:#x}-{:#x}", x * 4096, y * 4096)],
    );
    assert_eq!(
        (r["pages"].as_u64(), r["output_len"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        r["warnings"][0].as_str().unwrap().contains("no page"),
        "{r:#}"
    );
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    // Unaligned or empty ranges are usage errors.
    for bad in ["0x1001-0x2000", "0x2000-0x1000"] {
        let o = run(&["extract", image, "--raw", &dir.path("bad"), "--range", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
    }
}

/// Standard input (spooled) and the same image converted to migration v2
/// give byte-identical raw files; the v2 core's registers come from the
/// CPU records alone and still match.
#[test]
fn pipes_and_v2_extract_the_same_memory() {
    let dir = Dir::new();
    let image = golden("seed64-live-xend");
    let image = image.to_str().unwrap();
    let want = dir.path("file.raw");
    let rf = extract(image, "--raw", &want, &[]);
    let want = std::fs::read(&want).unwrap();
    let piped = dir.path("pipe.raw");
    let o = Command::new(bin())
        .args(["extract", "-", "--raw", &piped])
        .stdin(std::fs::File::open(image).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(std::fs::read(&piped).unwrap() == want, "stdin");
    // A pipe longer than --spool-limit is refused, and nothing is written.
    let refused = dir.path("refused.raw");
    let o = Command::new(bin())
        .args(["--spool-limit", "4096", "extract", "-", "--raw", &refused])
        .stdin(std::fs::File::open(image).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(!Path::new(&refused).exists());
    let v2 = dir.path("v2.img");
    let o = run(&["convert", image, "-o", &v2, "--to", "libxc"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v2raw = dir.path("v2.raw");
    let rv = extract(&v2, "--raw", &v2raw, &[]);
    assert!(std::fs::read(&v2raw).unwrap() == want, "v2");
    for (a, b) in rf["vcpus"]
        .as_array()
        .unwrap()
        .iter()
        .zip(rv["vcpus"].as_array().unwrap())
    {
        assert_eq!(b["source"], "cpu-record");
        for k in ["id", "rip", "rsp", "cr3"] {
            assert_eq!(a[k], b[k], "v2 vcpu {k}");
        }
    }
}

/// A damaged image writes nothing and exits 1 with the reader's error
/// (offset and record); an existing output needs --force; the input is
/// never the output.
#[test]
fn damaged_images_and_the_output_rules() {
    let dir = Dir::new();
    let bytes = std::fs::read(golden("seed64-live-xend")).unwrap();
    let cut = dir.path("cut.img");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for flag in ["--raw", "--elf", "--lime"] {
        let out = dir.path("cut.out");
        let o = run(&["extract", &cut, flag, &out]);
        assert_eq!(o.status.code(), Some(1), "{flag}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("at byte "), "{err}");
        assert!(!Path::new(&out).exists(), "{flag}: output left behind");
    }
    // A file of zeros reads to its end but `validate` calls it INVALID:
    // extracted (no memory), said on stderr, exit 1 as `digest` does.
    let zeros = dir.path("zeros.img");
    std::fs::write(&zeros, [0u8; 65536]).unwrap();
    let out = dir.path("zeros.raw");
    let o = run(&["extract", &zeros, "--raw", &out]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("INVALID"),
        "{o:?}"
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
    std::fs::remove_file(&out).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.0.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("hvm-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let image = golden("seed64-nonlive");
    let image = image.to_str().unwrap();
    let out = dir.path("x.raw");
    std::fs::write(&out, b"keep").unwrap();
    let o = run(&["extract", image, "--raw", &out]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let o = run(&["extract", image, "--raw", &out, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let copy = dir.path("copy.img");
    std::fs::copy(image, &copy).unwrap();
    let o = run(&["extract", &copy, "--elf", &copy, "--force"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(image).unwrap());
    // Two formats at once is a usage error.
    let o = run(&[
        "extract",
        image,
        "--raw",
        &dir.path("a"),
        "--elf",
        &dir.path("b"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

// ------------------------------------------------------- real consumers

/// The venv's Python with pyelftools and volatility3, and readelf and gdb;
/// `None` (after a loud skip, or a panic under HVM_REQUIRE) when absent.
fn forensic(test: &str) -> Option<PathBuf> {
    let py = std::env::var_os("HVM_FORENSIC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/forensic-venv/bin/python3")
        });
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let missing = if !ok(Command::new(&py).args(["-c", "import elftools, volatility3"])) {
        Some(format!("{} with pyelftools and volatility3", py.display()))
    } else if !ok(Command::new("readelf").arg("--version")) {
        Some("readelf".into())
    } else if !ok(Command::new("gdb").args(["-nx", "-batch", "-ex", "show version"])) {
        Some("gdb".into())
    } else {
        None
    };
    match missing {
        Some(m) => {
            hvm_tests::prereq::skip(
                FORENSIC,
                test,
                &format!("{m} not found (HVM_SETUP_FORENSIC=1 scripts/setup.sh installs them)"),
            );
            None
        }
        None => Some(py),
    }
}

fn read_py(py: &Path, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/forensic/read.py");
    let o = Command::new(py).arg(script).args(args).output().unwrap();
    assert!(o.status.success(), "read.py {args:?}: {o:?}");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `show vcpu`'s value of the first field named one of `names`.
fn field(v: &Value, names: &[&str]) -> u64 {
    v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| names.contains(&f["name"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("no {names:?}"))["value"]["value"]
        .as_u64()
        .unwrap()
}

/// readelf, gdb, pyelftools and volatility3 on every golden image: the
/// segments and notes listed, each vCPU's RIP/RSP (gdb, pyelftools) and
/// CR3 (QEMU note) equal to `show vcpu`, and a known page read at its
/// physical address from the core, the raw file and the LiME file.
/// Catches: a register in the wrong pr_reg slot, a wrong note size or
/// name, a PT_LOAD whose p_paddr or p_offset is off by a page.
#[test]
fn forensic_tools_read_what_show_vcpu_and_the_image_say() {
    let Some(py) = forensic("forensic_tools_read_what_show_vcpu_and_the_image_say") else {
        return;
    };
    let dir = Dir::new();
    for spec in specs() {
        let image = golden(spec.name);
        let image = image.to_str().unwrap();
        let mem = final_memory(&spec);
        let (core, raw, lime) = (dir.path("c.core"), dir.path("c.raw"), dir.path("c.lime"));
        for (flag, out) in [("--elf", &core), ("--raw", &raw), ("--lime", &lime)] {
            extract(image, flag, out, &["--force"]);
        }
        let name = spec.name;
        // readelf: one LOAD per run, NT_PRSTATUS and QEMU notes per vCPU.
        let o = Command::new("readelf")
            .args(["-l", "-n", "-W", &core])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let text = String::from_utf8_lossy(&o.stdout);
        let count = |pat: &str| {
            text.lines()
                .filter(|l| l.trim_start().starts_with(pat))
                .count()
        };
        assert_eq!(count("LOAD"), runs_of(&mem).len(), "{name}: {text}");
        assert_eq!(count("NOTE"), 1, "{name}: {text}");
        assert!(text.contains("Elf file type is CORE"), "{name}");
        let prstatus = text
            .lines()
            .filter(|l| l.contains("CORE") && l.contains("NT_PRSTATUS"))
            .count();
        let qemu = text
            .lines()
            .filter(|l| l.trim_start().starts_with("QEMU"))
            .count();
        assert_eq!(
            (prstatus, qemu),
            (spec.vcpus as usize, spec.vcpus as usize),
            "{name}: {text}"
        );

        let show: Value =
            serde_json::from_slice(&run(&["--json", "show", "vcpu", image]).stdout).unwrap();
        let vcpus = show["vcpus"].as_array().unwrap();
        assert_eq!(vcpus.len(), spec.vcpus as usize);
        // gdb: one thread per vCPU (LWP id+1), registers as show vcpu.
        let o = Command::new("gdb")
            .args([
                "-nx",
                "-batch",
                "-c",
                &core,
                "-ex",
                "thread apply all info registers rip rsp",
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let mut gdb: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        let mut lwp = None;
        for l in out.lines() {
            if let Some(rest) = l.split("(LWP ").nth(1) {
                lwp = rest.split(')').next().and_then(|n| n.parse::<u64>().ok());
            }
            let mut w = l.split_whitespace();
            if let (Some(reg @ ("rip" | "rsp")), Some(val), Some(id)) = (w.next(), w.next(), lwp) {
                let v = u64::from_str_radix(val.trim_start_matches("0x"), 16).unwrap();
                let e = gdb.entry(id).or_default();
                if reg == "rip" {
                    e.0 = v
                } else {
                    e.1 = v
                }
            }
        }
        let notes = read_py(&py, &["notes", &core]);
        for v in vcpus {
            let i = v["index"].as_u64().unwrap();
            let rip = field(v, &["user_regs.rip", "user_regs.eip"]);
            let rsp = field(v, &["user_regs.rsp", "user_regs.esp"]);
            let cr3 = field(v, &["ctrlreg[3]"]);
            assert_eq!(
                gdb.get(&(i + 1)),
                Some(&(rip, rsp)),
                "{name} vcpu {i}: gdb said\n{out}"
            );
            let p = &notes["prstatus"][i as usize];
            assert_eq!(
                (p["pid"].as_u64(), p["rip"].as_u64(), p["rsp"].as_u64()),
                (Some(i + 1), Some(rip), Some(rsp)),
                "{name}"
            );
            let q = &notes["qemu"][i as usize];
            assert_eq!(
                (q["version"].as_u64(), q["size"].as_u64()),
                (Some(1), Some(440)),
                "{name}"
            );
            assert_eq!(q["cr"][3].as_u64(), Some(cr3), "{name} vcpu {i}: CR3");
            assert_eq!(q["rip"].as_u64(), Some(rip), "{name}");
        }
        // A known page (the highest present, and one mid-memory) read by
        // pyelftools from the core and by volatility3 from raw and LiME.
        let keys: Vec<u64> = mem.keys().copied().collect();
        for pfn in [keys[keys.len() / 2], *keys.last().unwrap()] {
            let want = hex(&mem[&pfn]);
            let addr = format!("{:#x}", pfn * PAGE_SIZE as u64);
            for (kind, file) in [("elf", &core), ("raw", &raw), ("lime", &lime)] {
                let got = read_py(&py, &[kind, file, &addr, "4096"]);
                assert_eq!(
                    got["hex"].as_str().unwrap(),
                    want,
                    "{name} {kind} pfn {pfn:#x}"
                );
            }
        }
        // gdb reads physical memory through p_vaddr == p_paddr.
        let pfn = keys[keys.len() / 2];
        let o = Command::new("gdb")
            .args([
                "-nx",
                "-batch",
                "-c",
                &core,
                "-ex",
                &format!("x/1gx {:#x}", pfn * PAGE_SIZE as u64),
            ])
            .output()
            .unwrap();
        let want = u64::from_le_bytes(mem[&pfn][..8].try_into().unwrap());
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!("{want:#018x}")),
            "{name}: gdb x/1gx: {out}"
        );
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A signal while the output's temporary exists leaves nothing behind.
#[test]
fn a_signal_leaves_no_extract_behind() {
    use std::os::unix::process::ExitStatusExt;
    let dir = Dir::new();
    // Standard input that never ends keeps the spool (and the run) going.
    let mut child = Command::new(bin())
        .current_dir(dir.0.path())
        .args(["extract", "-", "--elf", "out.core"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut si = child.stdin.take().unwrap();
    let bytes = std::fs::read(golden("seed64-nonlive")).unwrap();
    std::io::Write::write_all(&mut si, &bytes[..4096]).unwrap();
    for _ in 0..200 {
        if names(dir.0.path()).iter().any(|n| n.contains("hvm-tmp")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(names(dir.0.path()).iter().any(|n| n.contains("hvm-tmp")));
    let sent = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(1), "died of SIGHUP");
    assert!(names(dir.0.path()).is_empty(), "{:?}", names(dir.0.path()));
}

/// A full disk: the error names the output, and the file it would have
/// replaced is kept.
#[test]
fn a_full_disk_names_the_output_and_keeps_the_old_file() {
    let dir = Dir::new();
    let Some(mnt) = hvm_tests::tmpfs::small(dir.0.path(), "64k") else {
        return;
    };
    let old = mnt.join("old.lime");
    std::fs::write(&old, b"PRECIOUS\n").unwrap();
    let image = golden("seed64-live-xend");
    let o = run(&[
        "extract",
        image.to_str().unwrap(),
        "--lime",
        old.to_str().unwrap(),
        "--force",
    ]);
    let listing = names(&mnt);
    let kept = std::fs::read(&old).unwrap();
    hvm_tests::tmpfs::unmount(&mnt);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("old.lime") && err.contains("No space"),
        "{err}"
    );
    assert_eq!(listing, ["old.lime"], "no temporary left");
    assert_eq!(kept, b"PRECIOUS\n");
}
