//! `hvm-save`: save a running HVM guest as a seed-dialect Xen save image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};

use hvm_cli::output::{AtomicFile, Outputs};
use hvm_cli::stdout::warn;
use hvm_save::backend::sim::{SimConfig, SimDomain, Workload};
use hvm_save::manifest::Manifest;
use hvm_save::policy::ThrottleMode;
use hvm_save::progress::{summary_line, Progress, StatsWriter};
use hvm_save::sink::Sink;
use hvm_save::{Domain, DowntimePolicy, Envelope, Policy, SaveOptions, SeedPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PolicyArg {
    /// xc_hvm_save's rules: 29 passes, 3x memory, fewer than 50 pages.
    Seed,
    /// Stop where the seed converges, or as soon as rounds stop shrinking
    /// (by less than 5 % a round); throttle the guest, or send during the
    /// suspend wait, when the final round would exceed --max-downtime.
    Downtime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ThrottleArg {
    /// Never slow the guest down.
    Off,
    /// Downtime policy: when rounds stop shrinking and the final round
    /// would exceed --max-downtime, throttle the guest's vCPUs in steps
    /// (20 %, then +10 % a pass, at most 99 %) until it fits.
    Auto,
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
/// -o - for stdout, or --to HOST:PORT), and optionally --live. Files (image,
/// manifest, stats) are written atomically with mode 0600, committed
/// together (manifest and stats first, the image last), and never replace an
/// existing file without --force, an input or one another. A failed or
/// interrupted save (INT, TERM, HUP) leaves nothing behind and the guest
/// running; temporaries of a killed run are removed by the next run to the
/// same file.
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
    /// Sim: guest page writes per second (0 to 1e8).
    #[arg(long, default_value_t = 20_000.0, value_parser = parse_rate)]
    dirty_rate: f64,
    /// Sim: pages in the hot set (--workload hot-set).
    #[arg(long, default_value_t = 4096)]
    hot_pages: u64,
    /// Sim: device-model (DMA) page writes per second (0 to 1e8).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    dm_rate: f64,
    /// Sim: pages that fail to map (sent as XTAB).
    #[arg(long, default_value_t = 0)]
    unmappable: u64,
    /// Sim, Xen: the guest has standard VGA, not Cirrus (decides the seed's
    /// 0x800-page VRAM adjustment of a live save).
    #[arg(long)]
    stdvga: bool,
    /// Sim: modelled link bandwidth in MB/s (1 to 1e6).
    #[arg(long, default_value_t = 1000.0, value_parser = parse_link)]
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

    /// Output file, or - for stdout (a pipe that stops reading fails the
    /// save after --io-timeout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Send to HOST:PORT over TCP instead. A failed or cancelled save
    /// resets the connection (the receiver sees "connection reset", not an
    /// end of stream).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "output")]
    to: Option<String>,
    /// --to and -o -: give up when connecting, or a write to the receiver,
    /// makes no progress for this long (seconds).
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_timeout)]
    io_timeout: f64,
    /// Replace existing output files (image, manifest, stats).
    #[arg(long)]
    force: bool,

    /// Pre-copy while the guest runs (XCFLAGS_LIVE).
    #[arg(long)]
    live: bool,
    /// Stop rule for pre-copy.
    #[arg(long, value_enum, default_value_t = PolicyArg::Downtime)]
    policy: PolicyArg,
    /// Downtime budget of the final round, ms (downtime policy): when rounds
    /// stop shrinking above it, the guest is throttled (--throttle auto) or,
    /// failing that, the saver keeps sending while the guest acknowledges
    /// the suspend.
    #[arg(long, default_value_t = 50)]
    max_downtime: u64,
    /// Throttle a guest that dirties memory faster than the save can send it
    /// (downtime policy; default auto). The seed policy never throttles:
    /// `--throttle auto` with `--policy seed` is refused. The throttle is
    /// lifted when the save ends, fails or is interrupted, and the summary
    /// says what it cost ("guest throttled up to X % for Y s").
    #[arg(long, value_enum, value_name = "off|auto")]
    throttle: Option<ThrottleArg>,
    /// Limit the send rate, MB/s.
    #[arg(long, value_name = "MB/s", value_parser = parse_link)]
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

    /// Manifest path (default: beside the image as IMAGE.manifest.json);
    /// committed with the image, an existing one replaced only with --force.
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
    /// Write one JSON line per pass and the summary here; committed with
    /// the image (nothing is kept if the save fails).
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// No progress display and no summary line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    manual: hvm_cli::manual::ManualArgs,
}

/// The most page writes per second the simulator models (guest or device
/// model): 1e8 pages/s is 400 GB/s, beyond any guest; above it the model's
/// write loop would run for hours of real time per virtual second.
const MAX_RATE: f64 = 1e8;

/// The most guest writes the simulator plays during one save, summed over
/// at most 31 rounds of all memory: about ten seconds of real time.
const MAX_SIM_WRITES: f64 = 2e9;

fn parse_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{s}: {e}"))?;
    if !v.is_finite() {
        return Err(format!("{s} is not a finite number"));
    }
    Ok(v)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if !(0.0..=MAX_RATE).contains(&v) {
        return Err(format!(
            "{v} page writes per second is outside 0..={MAX_RATE:e}"
        ));
    }
    Ok(v)
}

/// A rate in MB/s: at least 1 MB/s (below it a simulated save of a small
/// guest lasts virtual hours) and at most 1e6 MB/s (1 TB/s).
fn parse_link(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if !(1.0..=1e6).contains(&v) {
        return Err(format!("{v} MB/s is outside 1..=1e6"));
    }
    Ok(v)
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(format!("{v} s is outside (0, 86400]"));
    }
    Ok(v)
}

/// Options that are valid alone but not together, or not on this host.
fn check_sim(a: &Args) -> anyhow::Result<()> {
    let mib = a.memory.unwrap_or(256);
    let host = host_ram_mib();
    if host.is_some_and(|h| mib > h) {
        bail!(
            "--memory {mib} MiB is more than this host's {} MiB of RAM: the simulator keeps every guest page in memory",
            host.unwrap_or(0)
        );
    }
    // Writes the guest and device model make per page sent, over at most
    // 31 rounds of all memory: bounded, or the model spins for hours.
    let wire = (hvm_format::PAGE_SIZE + 8) as f64;
    let per_page = (a.dirty_rate + a.dm_rate) * wire / (a.link_mbps * 1e6);
    let writes = per_page * 31.0 * (mib as f64 * 256.0);
    if writes > MAX_SIM_WRITES {
        bail!(
            "--dirty-rate {} and --dm-rate {} over a {} MB/s link write {per_page:.0} pages per page sent: \
             simulating that save would take hours; lower the rates or raise --link-mbps",
            a.dirty_rate,
            a.dm_rate,
            a.link_mbps
        );
    }
    Ok(())
}

/// Physical RAM in MiB, if the host says.
fn host_ram_mib() -> Option<u64> {
    let mut si = std::mem::MaybeUninit::<libc::sysinfo>::uninit();
    // SAFETY: sysinfo fills the struct we own; read only on success.
    if unsafe { libc::sysinfo(si.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: sysinfo succeeded.
    let si = unsafe { si.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Some((si.totalram as u64).saturating_mul(si.mem_unit as u64) >> 20)
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
    check_sim(a)?;
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
        warn(format_args!(
            "hvm-save: KVM guest ({}) running, steps {:?} after {} ms warm-up",
            d.vm().host_info().describe(),
            d.progress(),
            a.warmup_ms
        ));
    }
    Ok(Box::new(d))
}

#[cfg(not(target_os = "linux"))]
fn open_kvm(_: &Args) -> anyhow::Result<Box<dyn Domain>> {
    bail!(hvm_save::backend::unavailable("KVM (--kvm, Linux only)"));
}

fn run(a: Args) -> anyhow::Result<()> {
    if a.policy == PolicyArg::Seed && a.throttle == Some(ThrottleArg::Auto) {
        bail!("--throttle auto needs --policy downtime: the seed policy never throttles");
    }
    let cancel = hvm_cli::signal::cancel_flag();
    let timeout = Duration::from_secs_f64(a.io_timeout);
    // Every output is checked, and its temporary created, before the guest
    // is touched: a refusal costs nothing.
    let mut outputs = Outputs::new();
    let image_path = match (&a.output, &a.to) {
        (Some(p), _) if p.as_os_str() == "-" => None,
        (Some(p), _) => Some(p.clone()),
        (None, Some(_)) => None,
        (None, None) => bail!("choose a destination: -o FILE, -o - or --to HOST:PORT"),
    };
    let image_file = match &image_path {
        Some(p) => Some(outputs.create("image", p, a.force)?),
        None => {
            if a.output.is_some() {
                outputs.stdout("image")?;
            }
            None
        }
    };
    let manifest_path = if a.no_manifest {
        None
    } else {
        a.manifest
            .clone()
            .or_else(|| image_path.as_deref().map(Manifest::default_path))
    };
    let manifest_file = match &manifest_path {
        Some(p) => Some(outputs.create("manifest", p, a.force)?),
        None => None,
    };
    let stats_file = match &a.stats {
        Some(p) => Some(outputs.create("stats", p, a.force)?),
        None => None,
    };
    for p in outputs.take_stale() {
        warn(format_args!(
            "hvm-save: removed {}, left behind by a run that was killed",
            p.display()
        ));
    }
    let mut domain = open_domain(&a)?;
    let mut sink = match (image_file, &a.to) {
        (Some(f), _) => Sink::File(f),
        (None, Some(addr)) => Sink::tcp(addr, Some(cancel.clone()), timeout)
            .with_context(|| format!("connecting to {addr}"))?,
        (None, None) => {
            Sink::stdout(Some(cancel.clone()), timeout).context("opening standard output")?
        }
    };
    let mut policy: Box<dyn Policy> = match a.policy {
        PolicyArg::Seed => Box::new(SeedPolicy::default()),
        PolicyArg::Downtime => Box::new(
            DowntimePolicy::new(Duration::from_millis(a.max_downtime)).with_throttle(
                match a.throttle.unwrap_or(ThrottleArg::Auto) {
                    ThrottleArg::Off => ThrottleMode::Off,
                    ThrottleArg::Auto => ThrottleMode::Auto,
                },
            ),
        ),
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
        cancel: Some(cancel),
        ..SaveOptions::default()
    };
    let mut progress = Progress::new(!a.quiet);
    let mut stats = stats_file.map(|f| StatsWriter::new(std::io::BufWriter::new(f)));
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
            return Err(e).context("save failed; the guest was left running and no file was kept");
        }
    };
    // Finish the manifest and stats before anything gets its name: a full
    // disk there keeps nothing, not an image without its manifest.
    let mut with: Vec<AtomicFile> = Vec::new();
    let not_kept = "the save finished but no file was kept";
    if let Some(s) = stats {
        let f = s
            .finish()
            .map_err(anyhow::Error::from)
            .and_then(|w| w.into_inner().map_err(|e| e.into_error().into()))
            .context(not_kept)?;
        with.push(f);
    }
    if let (Some(mut f), Some(m)) = (manifest_file, &outcome.manifest) {
        std::io::Write::write_all(&mut f, m.to_json().as_bytes()).context(not_kept)?;
        with.push(f);
    }
    sink.commit_with(with)
        .context("the save finished but its files could not be kept")?;
    if !a.quiet {
        warn(format_args!("{}", summary_line(&outcome.summary)));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = hvm_cli::manual::parse::<Args>();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            warn(format_args!(
                "hvm-save: {}",
                hvm_format::error::chain_message(&*e)
            ));
            ExitCode::from(2)
        }
    }
}
