//! `cargo bench -p hvm-inspect --bench convert`: `convert` against copying
//! the same file, in the same run, on the same cached input.
//!
//! * `convert` (library, read(2) in, one writev per PAGE_DATA out) of a
//!   3.1–4.5 legacy image of `HVM_BENCH_MIB` MiB (default 1024) to a file
//!   left in the page cache, in libxc and xl framing, vs a read/write copy
//!   of the input with a 4 MiB buffer (what `cat IN > OUT` does) and vs
//!   `std::fs::copy` (copy_file_range): target ≥ 60 % of the read/write copy.
//! * Xen's `convert-legacy-stream` on the same legacy input, when the
//!   oracle is installed (`scripts/install-xen-oracle.sh`).
//!
//! Environment: `HVM_BENCH_MIB`, `HVM_BENCH_DIR` (default the system temp
//! dir; files are deleted at the end), `HVM_BENCH_RUNS` (median; default 3).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hvm_format::dialect::Dialect;
use hvm_format::hvm::translate::to_current;
use hvm_format::hvm::{seed_reset_blob, CpuSeed};
use hvm_format::image::OpenOptions;
use hvm_format::legacy::Writer;
use hvm_format::stream::Layout;
use hvm_format::vcpu::{VcpuContext, VcpuRegisters};
use hvm_format::{PfnEntry, WordSize, PAGE_SIZE};
use hvm_inspect::convert::{convert, Target};
use hvm_inspect::Input;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_runs(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// A Xen 4.x HVM image of `mib` MiB of RAM: batches of 1024 distinct
/// pages, the magic pfns, a current-layout blob, a small device model.
fn legacy_image(path: &Path, mib: u64) -> std::io::Result<()> {
    let pages = mib * 256;
    let out = std::io::BufWriter::with_capacity(8 << 20, File::create(path)?);
    let mut layout = Layout::of(Dialect::Legacy);
    layout.device_model = true;
    let mut w = Writer::new(out, WordSize::W64, layout);
    let e = |r: hvm_format::Result<()>| r.map_err(std::io::Error::other);
    e(w.leading_word(pages))?;
    let mut vi = 0u32.to_le_bytes().to_vec();
    vi.extend_from_slice(&1u64.to_le_bytes());
    e(w.chunk(-2, &vi))?;
    let mut page = vec![0u8; PAGE_SIZE];
    let mut buf: Vec<Vec<u8>> = Vec::with_capacity(1024);
    let mut pfn = 0u64;
    while pfn < pages {
        let n = (pages - pfn).min(1024);
        let entries: Vec<PfnEntry> = (pfn..pfn + n).map(PfnEntry::page).collect();
        buf.clear();
        for p in pfn..pfn + n {
            page[..8].copy_from_slice(&p.to_le_bytes());
            page[PAGE_SIZE - 8..].copy_from_slice(&(!p).to_le_bytes());
            buf.push(page.clone());
        }
        let refs: Vec<&[u8]> = buf.iter().map(|p| &p[..]).collect();
        e(w.batch(&entries, &refs))?;
        pfn += n;
    }
    e(w.end())?;
    e(w.magic_pfns(pages - 1, pages - 3, pages - 2))?;
    let ctx = VcpuContext::from_registers(WordSize::W64, &VcpuRegisters::default())
        .map_err(std::io::Error::other)?;
    let blob = to_current(&seed_reset_blob(0x6FB, &[CpuSeed::power_on()]), &[ctx])
        .map_err(std::io::Error::other)?
        .blob;
    e(w.hvm_blob(&blob))?;
    e(w.device_model(b"QEVM\0\0\0\x01"))?;
    w.finish().map_err(std::io::Error::other)?.flush()
}

fn rw_copy(src: &Path, dst: &Path) {
    let mut i = File::open(src).unwrap();
    let mut o = File::create(dst).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = i.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        o.write_all(&buf[..n]).unwrap();
    }
}

fn oracle() -> Option<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xen-oracle/usr/lib");
    let mut xens: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("xen-"))
        })
        .collect();
    xens.sort();
    let x = xens.pop()?;
    let tool = x.join("bin/convert-legacy-stream");
    tool.is_file().then(|| (tool, x.join("lib/python")))
}

fn main() {
    let mib: u64 = std::env::var("HVM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let runs: usize = std::env::var("HVM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = std::env::var_os("HVM_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("hvm-convert-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("legacy.img");
    let out = dir.join("out");
    legacy_image(&src, mib).expect("write bench image");
    let len = std::fs::metadata(&src).unwrap().len();
    // Warm the page cache with the input.
    rw_copy(&src, &out);
    let gib = len as f64 / (1u64 << 30) as f64;
    let mut rows: Vec<(String, Duration)> = Vec::new();
    rows.push((
        "copy: read/write, 4 MiB buffer".into(),
        time_runs(runs, || rw_copy(&src, &out)),
    ));
    rows.push((
        "copy: std::fs::copy (copy_file_range)".into(),
        time_runs(runs, || {
            std::fs::copy(&src, &out).unwrap();
        }),
    ));
    for (name, t) in [("libxc", Target::Libxc), ("xl", Target::Xl)] {
        rows.push((
            format!("hvm-inspect convert --to {name}"),
            time_runs(runs, || {
                convert(
                    Input::open(src.to_str().unwrap()).unwrap(),
                    &out,
                    t,
                    OpenOptions::default(),
                )
                .unwrap();
            }),
        ));
    }
    if let Some((tool, pythonpath)) = oracle() {
        // Python is slow: one run.
        let t = Instant::now();
        let ok = Command::new("python3")
            .arg(&tool)
            .args(["-i", src.to_str().unwrap(), "-o", out.to_str().unwrap()])
            .args(["-w", "64", "-g", "hvm"])
            .env("PYTHONPATH", &pythonpath)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let el = t.elapsed();
        assert!(ok, "convert-legacy-stream failed");
        rows.push(("Xen convert-legacy-stream (libxc, 1 run)".into(), el));
    } else {
        println!("*** SKIPPED: Xen's convert-legacy-stream (oracle not installed) ***");
    }
    let copy = rows[0].1.as_secs_f64();
    println!(
        "\nconvert of a {mib} MiB 3.1–4.5 legacy image ({len} bytes), median of {runs}, output in the page cache\n"
    );
    println!(
        "| {:<42} | {:>9} | {:>9} | {:>12} |",
        "what", "seconds", "GiB/s", "vs r/w copy"
    );
    println!("|{:-<44}|{:->11}|{:->11}|{:->14}|", "", "", "", "");
    for (name, d) in &rows {
        let s = d.as_secs_f64();
        println!(
            "| {:<42} | {:>9.3} | {:>9.2} | {:>11.0} % |",
            name,
            s,
            gib / s,
            100.0 * copy / s
        );
    }
    let best = rows
        .iter()
        .filter(|(n, _)| n.starts_with("hvm-inspect"))
        .map(|(_, d)| d.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    println!(
        "\ntarget: convert ≥ 60 % of the read/write copy: {} ({:.0} %)",
        if copy / best >= 0.6 { "met" } else { "NOT met" },
        100.0 * copy / best
    );
    let _ = std::fs::remove_dir_all(&dir);
}
