//! `hvm-restore-check`: the command-line front of the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

use hvm_format::WordSize;
use hvm_restore_check::{Checker, Manifest, Options};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Word {
    #[value(name = "32")]
    W32,
    #[value(name = "64")]
    W64,
}

impl From<Word> for WordSize {
    fn from(w: Word) -> Self {
        match w {
            Word::W32 => WordSize::W32,
            Word::W64 => WordSize::W64,
        }
    }
}

/// Replay a Xen HVM save image as the 2007 restorer (xc_hvm_restore,
/// e2a44bc7a4) would, and prove it restores the guest it came from.
///
/// Applies the restorer's rules (batch bounds, pfn range against the
/// configured memory, VGA hole, vCPU record size, HVM header), compares the
/// verify pass (-1 resend) page by page with the restored memory, says
/// whether current Xen would load the HVM blob, and with --expect compares
/// memory, 2 MiB ranges and vCPUs with hvm-save's manifest.
///
/// Exit status: 0 restorable (and matching the manifest), 1 not, 2 usage or
/// I/O error.
#[derive(Parser, Debug)]
#[command(name = "hvm-restore-check", version)]
struct Cli {
    /// The image file, or `-` for standard input.
    image: PathBuf,
    /// hvm-save's manifest (`<image>.manifest.json`) to compare against.
    #[arg(long, value_name = "MANIFEST")]
    expect: Option<PathBuf>,
    /// Configured guest memory in MiB, as xend's `memory` (default: the xend
    /// config's, else what max_pfn implies).
    #[arg(long, value_name = "MiB")]
    memory: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also print the replayed memory digest without a manifest.
    #[arg(long)]
    digest: bool,
    /// Force the stream's toolstack word size.
    #[arg(long, value_enum)]
    word: Option<Word>,
    /// Word size of the restoring toolstack (default: the stream's).
    #[arg(long, value_enum)]
    restore_word: Option<Word>,
    /// Word size of the hypervisor loading the HVM blob.
    #[arg(long, value_enum, default_value = "64")]
    xen_word: Word,
    /// Only the exit status and errors.
    #[arg(short, long)]
    quiet: bool,
    /// Load the image into a fresh KVM VM and run it on: an image of
    /// hvm-save's built-in KVM workload must match an uninterrupted control
    /// run (memory and registers) after --steps more steps; any other image
    /// runs for a bounded time, not compared. Needs /dev/kvm.
    #[arg(long)]
    resume: bool,
    /// With --resume: workload steps past the save point.
    #[arg(long, default_value_t = 100_000, requires = "resume")]
    steps: u64,
    /// With --resume: limit for each run, seconds.
    #[arg(long, default_value_t = 30, requires = "resume")]
    timeout: u64,
    /// Page data of standard input spooled to a temporary file at most
    /// (bytes; default 16 GiB). A file is mapped, never spooled.
    #[arg(long, value_name = "BYTES", default_value_t = hvm_restore_check::DEFAULT_SPOOL_LIMIT)]
    spool_limit: u64,
    #[command(flatten)]
    manual: hvm_cli::manual::ManualArgs,
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let expect = match &cli.expect {
        Some(p) => {
            Some(Manifest::read_path(p).with_context(|| format!("manifest {}", p.display()))?)
        }
        None => None,
    };
    let opts = Options {
        memory_mib: cli.memory,
        word: cli.word.map(Into::into),
        restore_word: cli.restore_word.map(Into::into),
        xen_word: cli.xen_word.into(),
        expect,
        digest: cli.digest,
        // Guest RAM only for --resume: the check reads pages from the image.
        keep_memory: cli.resume,
        spool_limit: cli.spool_limit,
        ..Options::default()
    };
    let mut report = Checker::new()
        .check_path(&cli.image, &opts)
        .with_context(|| format!("checking {}", cli.image.display()))?;
    let resumed = if cli.resume {
        Some(resume_or_refuse(&cli, &mut report)?)
    } else {
        None
    };
    let mut out = String::new();
    if cli.json {
        out = match &resumed {
            Some(r) => serde_json::to_string_pretty(
                &serde_json::json!({"check": &report, "resume": &r.json}),
            )?,
            None => serde_json::to_string_pretty(&report)?,
        };
        out.push('\n');
    } else if !cli.quiet {
        out = report.render_text();
        if let Some(r) = &resumed {
            out.push_str(&r.text);
        }
    }
    // A lost report is an error: a closed pipe ends the run quietly by
    // SIGPIPE, anything else (a full disk) exits 2. Never `println!`, which
    // panics.
    if let Err(f) = hvm_cli::stdout::write(out.as_bytes()) {
        return Ok(i32::from(hvm_cli::stdout::fail("hvm-restore-check", &f)));
    }
    Ok(report.exit_code().max(resumed.map_or(0, |r| r.exit_code)))
}

/// A resume's outcome as the front end prints it.
struct Resumed {
    json: serde_json::Value,
    text: String,
    exit_code: i32,
}

impl Resumed {
    /// The image itself stands in the way of a resume: a verdict about the
    /// image (exit 1, printed after the check's report), not a failure of
    /// the tool.
    fn refused(why: String) -> Self {
        Resumed {
            json: serde_json::json!({ "resumed": false, "refused": why }),
            text: format!("resume: refused: {why}\n"),
            exit_code: 1,
        }
    }
}

/// `--resume` after the check: an image the check found bad, or one the
/// resume cannot load, is refused with the check's report and exit 1;
/// only a failure of the host (no KVM, KVM errors, I/O) is exit 2.
fn resume_or_refuse(cli: &Cli, report: &mut hvm_restore_check::Report) -> anyhow::Result<Resumed> {
    if report.exit_code() != 0 {
        return Ok(Resumed::refused(
            "the image failed the check above; a guest is only resumed from an image that passes"
                .into(),
        ));
    }
    match resume(cli, report) {
        Err(e) => match e.downcast_ref::<ResumeFailure>() {
            Some(ResumeFailure::Image(why)) => Ok(Resumed::refused(why.clone())),
            None => Err(e),
        },
        ok => ok,
    }
}

/// A resume stopped by the image rather than by the host.
#[derive(Debug, thiserror::Error)]
enum ResumeFailure {
    #[error("{0}")]
    Image(String),
}

#[cfg(target_os = "linux")]
fn resume(cli: &Cli, report: &mut hvm_restore_check::Report) -> anyhow::Result<Resumed> {
    use hvm_restore_check::resume::{resume_image, ResumeOptions};
    let memory = report
        .take_memory()
        .context("--resume: the image's memory could not be replayed")?;
    let file = std::fs::File::open(&cli.image)
        .with_context(|| format!("--resume needs a file, not {}", cli.image.display()))?;
    // Guarded like the checker's own map: a file truncated meanwhile is an
    // error naming the offset, not SIGBUS.
    let map = hvm_format::mapped::GuardedMap::map(&file)
        .with_context(|| format!("mapping {}", cli.image.display()))?;
    let opts = ResumeOptions {
        steps: cli.steps,
        timeout: std::time::Duration::from_secs(cli.timeout),
        expect_comparable: cli.expect.is_some(),
        ..ResumeOptions::default()
    };
    let r = resume_image(map.bytes(), &memory, &opts);
    map.check(&file)
        .with_context(|| format!("reading {}", cli.image.display()))?;
    let r = match r {
        Err(hvm_restore_check::resume::ResumeError::Image(why)) => {
            return Err(ResumeFailure::Image(why).into())
        }
        r => r?,
    };
    Ok(Resumed {
        json: serde_json::to_value(&r)?,
        text: r.render_text(),
        exit_code: r.exit_code(),
    })
}

#[cfg(not(target_os = "linux"))]
fn resume(_: &Cli, _: &mut hvm_restore_check::Report) -> anyhow::Result<Resumed> {
    anyhow::bail!("--resume needs KVM (Linux)")
}

fn main() -> ExitCode {
    // Usage errors exit 2, --help and --version 0.
    let cli = hvm_cli::manual::parse::<Cli>();
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            hvm_cli::stdout::warn(format_args!(
                "hvm-restore-check: {}",
                hvm_format::error::chain_message(&*e)
            ));
            ExitCode::from(2)
        }
    }
}
