//! `hvm-restore-check` of a 1 GiB image against `hvm-inspect digest` of the
//! same image, both as release binaries run as child processes in the same
//! run, with the checker's peak memory.
//!
//! `cargo bench -p hvm-restore-check` (set `HVM_BENCH_MIB` for another
//! guest size, `HVM_BENCH_RUNS` for more rounds). It builds `hvm-inspect`
//! next to the checker's binary if it is not there yet.
//!
//! Memory: each child's `/proc/PID/status` is sampled every millisecond
//! while it runs. `RssAnon` is what the process itself allocated (heap,
//! anonymous maps: materialised guest memory would show here); `RssFile` is
//! the mapped image, pages of the page cache that the kernel can drop at
//! any time and that `cat` would cache just the same. The target is on
//! `RssAnon` (≤ 64 MiB for a 1 GiB image); `VmHWM` (peak of both) is shown
//! too. Sampling can miss a peak shorter than a millisecond; the checker's
//! memory only grows until it exits (its page table), so the last samples
//! are its peak.
//!
//! Time: medians of the wall-clock times, the image in the page cache; the
//! target is ≤ 1.5× `hvm-inspect digest` (which hashes every page on all
//! cores). `hvm-restore-check` alone reads every page header but hashes
//! nothing; `--digest` adds the memory digest, the same work as `digest`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../inspect/benches/support/bigimage.rs"]
mod bigimage;

/// A live save of a `mib` MiB guest: a full pass, a second pass re-sending
/// every 7th page with new content, then the verify pass re-sending every
/// page as it should be (so `hvm-restore-check` compares each verify copy
/// with the final copy, both read from the map).
fn write_live(path: &Path, mib: u64) {
    use hvm_format::hvm::{seed_reset_blob, CpuSeed};
    use hvm_format::stream::{vcpu_context_size, Writer};
    use hvm_format::{PfnEntry, WordSize, MAX_BATCH, PAGE_SIZE};
    use std::io::{BufWriter, Write as _};
    let f = std::fs::File::create(path).unwrap();
    let mut w = Writer::new(BufWriter::with_capacity(8 << 20, f), WordSize::W64);
    let top = mib * 256;
    w.max_pfn(top - 1).unwrap();
    let all: Vec<u64> = (0..top - 3).filter(|p| !(0xA0..0xC0).contains(p)).collect();
    let second: Vec<u64> = all.iter().copied().filter(|p| p % 7 == 3).collect();
    let version = |p: u64, pass: u8| if pass == 1 || p % 7 == 3 { 1u8 } else { 0 };
    let mut buf = vec![0u8; MAX_BATCH * PAGE_SIZE];
    for (pass, pfns) in [(0u8, &all), (1, &second), (2, &all)] {
        if pass == 2 {
            w.verify_marker().unwrap();
        }
        for chunk in pfns.chunks(MAX_BATCH) {
            for (k, &pfn) in chunk.iter().enumerate() {
                let p = &mut buf[k * PAGE_SIZE..(k + 1) * PAGE_SIZE];
                p.fill((pfn % 251) as u8 ^ version(pfn, pass));
                p[..8].copy_from_slice(&pfn.to_le_bytes());
            }
            let es: Vec<PfnEntry> = chunk.iter().map(|p| PfnEntry::page(*p)).collect();
            let ps: Vec<&[u8]> = buf.chunks_exact(PAGE_SIZE).take(chunk.len()).collect();
            w.batch(&es, &ps).unwrap();
        }
    }
    w.end().unwrap();
    w.vcpu_count(1).unwrap();
    w.vcpu(&vec![0; vcpu_context_size(WordSize::W64) as usize])
        .unwrap();
    w.hvm_blob(&seed_reset_blob(0x00A2_0F12, &[CpuSeed::power_on()]))
        .unwrap();
    w.finish().unwrap().flush().unwrap();
}

/// Item 6 of issue 11: 200 pages scattered over a 64 GiB guest (one per
/// 320 MiB). Guest memory advised for huge pages cost 2 MiB per page here.
fn write_scattered(path: &Path) {
    use hvm_format::hvm::{seed_reset_blob, CpuSeed};
    use hvm_format::stream::{vcpu_context_size, Writer};
    use hvm_format::{PfnEntry, WordSize, PAGE_SIZE};
    let pages = 64u64 << 18; // 64 GiB in pfns
    let pfns: Vec<u64> = (0..200).map(|k| k * (pages / 200) + 0x1000).collect();
    let mut w = Writer::new(Vec::new(), WordSize::W64);
    w.max_pfn(pages - 1).unwrap();
    let data: Vec<Vec<u8>> = pfns.iter().map(|&p| vec![p as u8 | 1; PAGE_SIZE]).collect();
    let es: Vec<PfnEntry> = pfns.iter().map(|&p| PfnEntry::page(p)).collect();
    let ps: Vec<&[u8]> = data.iter().map(|d| d.as_slice()).collect();
    w.batch(&es, &ps).unwrap();
    w.end().unwrap();
    w.vcpu_count(1).unwrap();
    w.vcpu(&vec![0; vcpu_context_size(WordSize::W64) as usize])
        .unwrap();
    w.hvm_blob(&seed_reset_blob(0x00A2_0F12, &[CpuSeed::power_on()]))
        .unwrap();
    std::fs::write(path, w.finish().unwrap()).unwrap();
}

#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    anon_kib: u64,
    file_kib: u64,
    hwm_kib: u64,
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        l.strip_prefix(name)?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// Run `cmd` to completion, sampling its memory; its wall time and peaks.
fn run(bin: &Path, args: &[&str]) -> (Duration, Peak, i32) {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = Peak::default();
    let code = loop {
        if let Ok(s) = std::fs::read_to_string(&status_path) {
            let anon = status_field(&s, "RssAnon:").unwrap_or(0);
            let file = status_field(&s, "RssFile:").unwrap_or(0);
            let hwm = status_field(&s, "VmHWM:").unwrap_or(0);
            peak.anon_kib = peak.anon_kib.max(anon);
            peak.file_kib = peak.file_kib.max(file);
            peak.hwm_kib = peak.hwm_kib.max(hwm);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    (t.elapsed(), peak, code)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `hvm-inspect` beside the checker's binary, built if missing.
fn inspect_binary(checker: &Path) -> PathBuf {
    let dir = checker.parent().expect("the binary is in a directory");
    let path = dir.join("hvm-inspect");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = if dir.ends_with("debug") {
            "dev"
        } else {
            "release"
        };
        let ok = Command::new(cargo)
            .args(["build", "-p", "hvm-inspect", "--bin", "hvm-inspect"])
            .args(["--profile", profile])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && path.exists(), "could not build {}", path.display());
    }
    path
}

fn main() {
    let mib: u64 = std::env::var("HVM_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let runs: usize = std::env::var("HVM_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let checker = PathBuf::from(env!("CARGO_BIN_EXE_hvm-restore-check"));
    let inspect = inspect_binary(&checker);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("bench.img");
    let img = path.to_str().unwrap();
    bigimage::big(img, mib).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    // Into the page cache, so every run reads the same cached bytes.
    std::io::copy(
        &mut std::fs::File::open(&path).unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
    println!(
        "image: {mib} MiB guest, {len} bytes ({:.2} GiB), in the page cache; {runs} rounds",
        len as f64 / (1u64 << 30) as f64
    );
    println!("checker: {}", checker.display());
    println!("digest:  {}", inspect.display());

    let cases: [(&str, &Path, Vec<&str>); 3] = [
        ("hvm-inspect digest", &inspect, vec!["digest", img]),
        ("hvm-restore-check", &checker, vec![img]),
        (
            "hvm-restore-check --digest",
            &checker,
            vec!["--digest", img],
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let mut peaks = vec![Peak::default(); cases.len()];
    // Interleaved rounds: a burst of load from elsewhere hits all alike.
    for _ in 0..runs {
        for (k, (name, bin, args)) in cases.iter().enumerate() {
            let (t, p, code) = run(bin, args);
            assert_eq!(code, 0, "{name} exited {code}");
            times[k].push(t);
            let q = &mut peaks[k];
            q.anon_kib = q.anon_kib.max(p.anon_kib);
            q.file_kib = q.file_kib.max(p.file_kib);
            q.hwm_kib = q.hwm_kib.max(p.hwm_kib);
        }
    }
    // The live image, after the big one is gone from the directory.
    std::fs::remove_file(&path).unwrap();
    let live = dir.path().join("live.img");
    let live_mib = mib / 4;
    write_live(&live, live_mib);
    let l = live.to_str().unwrap();
    let (mut ld, mut lc) = (Vec::new(), Vec::new());
    let mut lpeak = Peak::default();
    for _ in 0..runs {
        let (t, _, code) = run(&inspect, &["digest", l]);
        assert_eq!(code, 0, "digest of the live image exited {code}");
        ld.push(t);
        let (t, p, code) = run(&checker, &[l]);
        assert_eq!(code, 0, "hvm-restore-check of the live image exited {code}");
        lc.push(t);
        lpeak.anon_kib = lpeak.anon_kib.max(p.anon_kib);
    }
    let (ld, lc) = (median(ld), median(lc));
    let live_len = std::fs::metadata(&live).unwrap().len();
    std::fs::remove_file(&live).unwrap();
    let scattered = dir.path().join("scattered.img");
    write_scattered(&scattered);
    let (st, sp, scode) = run(&checker, &["--digest", scattered.to_str().unwrap()]);
    assert!(scode == 0 || scode == 1, "scattered image: exit {scode}");
    let base = median(times[0].clone());
    let mib_of = |kib: u64| kib as f64 / 1024.0;
    for (k, (name, _, _)) in cases.iter().enumerate() {
        let t = median(times[k].clone());
        let p = peaks[k];
        println!(
            "{name:<28} {:>7.3} s  {:>5.2}x digest (target <= 1.5x)  \
             peak RssAnon {:>6.1} MiB (target <= 64)  RssFile {:>7.1} MiB  VmHWM {:>7.1} MiB",
            t.as_secs_f64(),
            t.as_secs_f64() / base.as_secs_f64(),
            mib_of(p.anon_kib),
            mib_of(p.file_kib),
            mib_of(p.hwm_kib),
        );
    }
    println!(
        "live {live_mib} MiB guest, 2 passes + full verify pass ({live_len} bytes): \
         hvm-restore-check {:.3} s = {:.2}x digest's {:.3} s, peak RssAnon {:.1} MiB",
        lc.as_secs_f64(),
        lc.as_secs_f64() / ld.as_secs_f64(),
        ld.as_secs_f64(),
        mib_of(lpeak.anon_kib),
    );
    println!(
        "hvm-restore-check --digest, 200 pages scattered over a 64 GiB guest ({} bytes): \
         {:.3} s, peak RssAnon {:.1} MiB, VmHWM {:.1} MiB",
        std::fs::metadata(&scattered).unwrap().len(),
        st.as_secs_f64(),
        mib_of(sp.anon_kib),
        mib_of(sp.hwm_kib),
    );
}
