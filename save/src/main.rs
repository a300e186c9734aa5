//! `hvm-save`: save a running HVM guest as a seed-dialect Xen save image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};

use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::manifest::Manifest;
use hvm_save::progress::{summary_line, Progress, StatsWriter};
use hvm_save::sink::Sink;
use hvm_save::{Domain, DowntimePolicy, Envelope, Policy, SaveOptions, SeedPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PolicyArg {
    /// xc_hvm_save's rules: 29 passes, 3x memory, fewer than 50 pages.
    Seed,
    /// Stop where the seed converges, or as soon as rounds stop shrinking;
    /// send during the suspend wait when the final round would exceed
    /// --max-downtime.
    Downtime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    Idle,
    Uniform,
    HotSet,
    Sweep,
    Bursts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RateArg {
    /// Paced: 100 000 pacing iterations per step.
    Light,
    /// Flat out: every step writes at once.
    Heavy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EnvelopeArg {
    /// The bare libxc stream, as xc_save wrote it.
    Bare,
    /// xend's file: LinuxGuestRecord, SXP config, stream, QemuDeviceModelRecord.
    Xend,
}

/// Save a running HVM guest as a Xen HVM save image (the xc_hvm_save stream
/// of Xen e2a44bc7a4), live or not.
///
/// Pick a source (--sim for the simulated guest), a destination (-o FILE,
/// -o - for stdout, or --to HOST:PORT), and optionally --live. Files are
/// written atomically with mode 0600; a failed or interrupted save leaves
/// nothing behind and the guest running.
#[derive(Debug, Parser)]
#[command(name = "hvm-save", version)]
struct Args {
    /// Save the deterministic simulated guest.
    #[arg(long, group = "backend")]
    sim: bool,
    /// Live-save the embedded KVM guest (hvm-guest's built-in workload):
    /// builds it, runs the workload for --warmup-ms, then saves it live.
    #[arg(long, group = "backend")]
    kvm: bool,
    /// Save Xen domain DOMID (needs the `xen` feature and a Xen host).
    #[arg(long, group = "backend", value_name = "DOMID")]
    xen: Option<u32>,
    /// Xen: the device model's QMP socket (default libxl's,
    /// /var/run/xen/qmp-libxl-DOMID): told to log its DMA writes during a
    /// live save, asked for its state for --envelope xend. `none` skips
    /// both, safe only for a domain without emulated DMA.
    #[arg(long, value_name = "PATH|none", requires = "xen")]
    xen_qmp: Option<String>,

    /// Guest memory in MiB (default: 256 for --sim, 512 for --kvm).
    #[arg(long)]
    memory: Option<u64>,
    /// Sim: vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Sim: how the guest writes memory.
    #[arg(long, value_enum, default_value_t = WorkloadArg::Idle)]
    workload: WorkloadArg,
    /// Sim: guest page writes per second.
    #[arg(long, default_value_t = 20_000.0)]
    dirty_rate: f64,
    /// Sim: pages in the hot set (--workload hot-set).
    #[arg(long, default_value_t = 4096)]
    hot_pages: u64,
    /// Sim: device-model (DMA) page writes per second.
    #[arg(long, default_value_t = 0.0)]
    dm_rate: f64,
    /// Sim: pages that fail to map (sent as XTAB).
    #[arg(long, default_value_t = 0)]
    unmappable: u64,
    /// Sim, Xen: the guest has standard VGA, not Cirrus (decides the seed's
    /// 0x800-page VRAM adjustment of a live save).
    #[arg(long)]
    stdvga: bool,
    /// Sim: modelled link bandwidth in MB/s.
    #[arg(long, default_value_t = 1000.0)]
    link_mbps: f64,
    /// KVM: working set of the workload in MiB (split between vCPUs).
    #[arg(long, default_value_t = 64, value_name = "MiB")]
    working_set: u64,
    /// KVM: dirty rate of the workload: light (paced) or heavy (flat out).
    #[arg(long, value_enum, default_value_t = RateArg::Heavy)]
    rate: RateArg,
    /// KVM: pacing loop iterations per step, overriding --rate's.
    #[arg(long)]
    spin: Option<u64>,
    /// KVM: qword writes per workload step.
    #[arg(long, default_value_t = 1)]
    writes_per_step: u64,
    /// KVM: let the workload run this long before the save starts.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    warmup_ms: u64,
    /// Sim and KVM: PRNG seed.
    #[arg(long, default_value_t = 0x5eed_2007)]
    seed: u64,

    /// Output file, or - for stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Send to HOST:PORT over TCP instead.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "output")]
    to: Option<String>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,

    /// Pre-copy while the guest runs (XCFLAGS_LIVE).
    #[arg(long)]
    live: bool,
    /// Stop rule for pre-copy.
    #[arg(long, value_enum, default_value_t = PolicyArg::Downtime)]
    policy: PolicyArg,
    /// Downtime budget of the final round, ms (downtime policy): above it the
    /// saver keeps sending while the guest acknowledges the suspend.
    #[arg(long, default_value_t = 50)]
    max_downtime: u64,
    /// Limit the send rate, MB/s.
    #[arg(long, value_name = "MB/s")]
    max_rate: Option<f64>,
    /// Write -1 after the final round and resend everything (XCFLAGS_DEBUG).
    #[arg(long)]
    debug: bool,
    /// Wrap the stream as xend did.
    #[arg(long, value_enum, default_value_t = EnvelopeArg::Bare)]
    envelope: EnvelopeArg,
    /// Leave the guest paused if the save fails.
    #[arg(long)]
    leave_paused: bool,

    /// Manifest path (default: beside the image as IMAGE.manifest.json).
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Do not write a manifest.
    #[arg(long, conflicts_with = "manifest")]
    no_manifest: bool,
    /// Also record each page's digest in the manifest, so
    /// `hvm-restore-check --expect` names the pfn that differs, not only its
    /// 2 MiB range (about 90 bytes of JSON per page).
    #[arg(long, conflicts_with = "no_manifest")]
    page_digests: bool,
    /// Write one JSON line per pass and the summary here.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// No progress display and no summary line.
    #[arg(short, long)]
    quiet: bool,
}

fn install_signal_flag() -> Arc<AtomicBool> {
    static FLAG: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        FLAG.store(true, Ordering::SeqCst);
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to a static atomic, which is
        // async-signal-safe; `signal` is given a valid function pointer.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let shared = Arc::new(AtomicBool::new(false));
    let s = shared.clone();
    std::thread::spawn(move || loop {
        if FLAG.load(Ordering::SeqCst) {
            s.store(true, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    });
    shared
}

fn open_domain(a: &Args) -> anyhow::Result<Box<dyn Domain>> {
    if a.kvm {
        return open_kvm(a);
    }
    if a.xen_qmp.is_some() && a.xen.is_none() {
        bail!("--xen-qmp applies to --xen <DOMID> only");
    }
    if let Some(domid) = a.xen {
        let mut cfg = hvm_save::backend::xen::XenConfig::new(domid);
        cfg.stdvga = a.stdvga;
        match a.xen_qmp.as_deref() {
            Some("none") => cfg.qmp = None,
            Some(p) => cfg.qmp = Some(p.into()),
            None => {}
        }
        return Ok(hvm_save::backend::xen::open(cfg)?);
    }
    if !a.sim {
        bail!("choose a source: --sim (or --kvm / --xen DOMID where built)");
    }
    let workload = match a.workload {
        WorkloadArg::Idle => Workload::Idle,
        WorkloadArg::Uniform => Workload::Uniform { rate: a.dirty_rate },
        WorkloadArg::HotSet => Workload::HotSet {
            pages: a.hot_pages,
            rate: a.dirty_rate,
        },
        WorkloadArg::Sweep => Workload::Sweep { rate: a.dirty_rate },
        WorkloadArg::Bursts => Workload::Bursts {
            rate: a.dirty_rate,
            period: Duration::from_millis(500),
            duty: 0.2,
        },
    };
    let cfg = SimConfig {
        memory_mib: a.memory.unwrap_or(256),
        vcpus: a.vcpus,
        workload,
        dm_rate: a.dm_rate,
        unmappable: a.unmappable,
        stdvga: a.stdvga,
        link_bytes_per_sec: (a.link_mbps * 1e6) as u64,
        seed: a.seed,
        ..SimConfig::default()
    };
    Ok(Box::new(SimDomain::new(cfg)?))
}

/// Builds the embedded KVM guest, starts its workload and lets it warm up.
#[cfg(target_os = "linux")]
fn open_kvm(a: &Args) -> anyhow::Result<Box<dyn Domain>> {
    use hvm_save::backend::kvm::{KvmConfig, KvmDomain};
    let cfg = KvmConfig {
        memory_mib: a.memory.unwrap_or(512),
        vcpus: a.vcpus as usize,
        working_set_mib: a.working_set,
        writes_per_step: a.writes_per_step,
        spin: a.spin.unwrap_or(match a.rate {
            RateArg::Light => 100_000,
            RateArg::Heavy => 0,
        }),
        seed: a.seed,
        ..KvmConfig::default()
    };
    let mut d = KvmDomain::new(cfg)?;
    d.start()?;
    std::thread::sleep(Duration::from_millis(a.warmup_ms));
    if !a.quiet {
        eprintln!(
            "hvm-save: KVM guest ({}) running, steps {:?} after {} ms warm-up",
            d.vm().host_info().describe(),
            d.progress(),
            a.warmup_ms
        );
    }
    Ok(Box::new(d))
}

#[cfg(not(target_os = "linux"))]
fn open_kvm(_: &Args) -> anyhow::Result<Box<dyn Domain>> {
    bail!(hvm_save::backend::unavailable("KVM (--kvm, Linux only)"));
}

fn run(a: Args) -> anyhow::Result<()> {
    let mut domain = open_domain(&a)?;
    let (mut sink, image_path) = match (&a.output, &a.to) {
        (Some(p), _) if p.as_os_str() == "-" => (Sink::stdout(), None),
        (Some(p), _) => (
            Sink::file(p, a.force).with_context(|| format!("creating {}", p.display()))?,
            Some(p.clone()),
        ),
        (None, Some(addr)) => (
            Sink::tcp(addr).with_context(|| format!("connecting to {addr}"))?,
            None,
        ),
        (None, None) => bail!("choose a destination: -o FILE, -o - or --to HOST:PORT"),
    };
    let manifest_path = if a.no_manifest {
        None
    } else {
        a.manifest
            .clone()
            .or_else(|| image_path.as_deref().map(Manifest::default_path))
    };
    let mut policy: Box<dyn Policy> = match a.policy {
        PolicyArg::Seed => Box::new(SeedPolicy::default()),
        PolicyArg::Downtime => Box::new(DowntimePolicy::new(Duration::from_millis(a.max_downtime))),
    };
    let opts = SaveOptions {
        // The embedded KVM guest is always saved live.
        live: a.live || a.kvm,
        debug: a.debug,
        max_rate: a.max_rate.map(|r| (r * 1e6) as u64),
        leave_paused: a.leave_paused,
        manifest: manifest_path.is_some(),
        page_digests: a.page_digests,
        envelope: match a.envelope {
            EnvelopeArg::Bare => Envelope::Bare,
            EnvelopeArg::Xend => Envelope::Xend {
                domid: a.xen.unwrap_or(1),
                name: if a.kvm {
                    "hvm-save-kvm".into()
                } else if let Some(domid) = a.xen {
                    format!("xen-domain-{domid}")
                } else {
                    "hvm-save-sim".into()
                },
            },
        },
        cancel: Some(install_signal_flag()),
        ..SaveOptions::default()
    };
    let mut progress = Progress::new(!a.quiet);
    let mut stats = match &a.stats {
        Some(p) => Some(StatsWriter::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))),
        None => None,
    };
    let result = hvm_save::save(&mut domain, policy.as_mut(), &opts, &mut sink, &mut |e| {
        progress.observe(e);
        if let Some(s) = stats.as_mut() {
            s.observe(e);
        }
    });
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            sink.abort();
            return Err(e).context("save failed; the guest was left running and no image was kept");
        }
    };
    sink.commit().context("finishing the image")?;
    if let (Some(p), Some(m)) = (&manifest_path, &outcome.manifest) {
        let mut f = Sink::file(p, true).with_context(|| format!("creating {}", p.display()))?;
        std::io::Write::write_all(&mut f, m.to_json().as_bytes())?;
        f.commit()
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(s) = stats {
        s.finish().context("writing the stats file")?;
    }
    if !a.quiet {
        eprintln!("{}", summary_line(&outcome.summary));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hvm-save: {}", hvm_format::error::chain_message(&*e));
            ExitCode::from(2)
        }
    }
}
