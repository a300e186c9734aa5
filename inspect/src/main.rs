//! `hvm-inspect`: a thin clap front over the `hvm_inspect` library.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hvm_format::image::OpenOptions;
use hvm_format::rules::CheckOptions;
use hvm_format::WordSize;
use hvm_inspect::report::{self, ShowWhat};
use hvm_inspect::{diff, json, text, Input, InspectError};

/// Look inside Xen HVM save images without Xen: every legacy dialect (the
/// 2007 layouts, Xen 3.1–4.5) in xend, xl or libvirt files, and migration v2
/// (libxc, libxl, xl); convert any of them to v2.
///
/// Without a subcommand, `hvm-inspect IMAGE` prints the summary. IMAGE may be
/// `-` for standard input everywhere (for `diff`, at most one of A and B).
///
/// Exit status: 0 ok (valid / same), 1 the image is invalid or damaged
/// (`diff`: the images differ), 2 usage or I/O error (`diff`: any error).
#[derive(Parser, Debug)]
#[command(name = "hvm-inspect", version, max_term_width = 80)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Image to summarise (the default subcommand).
    image: Option<String>,
    #[command(flatten)]
    global: Global,
    #[command(flatten)]
    manual: hvm_cli::manual::ManualArgs,
}

#[derive(Args, Debug, Clone, Copy)]
struct Global {
    /// Print the report as JSON (schema "hvm-inspect/1", see
    /// docs/json-schema.md).
    #[arg(long, global = true)]
    json: bool,
    /// No progress bar and no report: only the exit status (errors still go
    /// to stderr).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Read the stream with this toolstack word size (32 or 64) instead of
    /// the detected one.
    #[arg(long, global = true, value_parser = parse_word)]
    word: Option<WordSize>,
    /// Most bytes of standard input (or a FIFO) that `digest`, `diff` and
    /// `extract` copy to a temporary file for random access [default: 1 GiB].
    #[arg(long, global = true, value_name = "BYTES")]
    spool_limit: Option<u64>,
}

fn parse_word(s: &str) -> Result<WordSize, String> {
    match s {
        "32" => Ok(WordSize::W32),
        "64" => Ok(WordSize::W64),
        _ => Err(format!("expected 32 or 64, found {s}")),
    }
}

fn parse_pfn(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s}: {e} (a pfn is decimal or 0x-prefixed hex)"))
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Envelope, dialect, passes, pages, vCPUs, HVM records, QEVM sections
    /// and the rules' verdict, in one pass and bounded memory.
    Summary {
        /// The image, or - for standard input.
        image: String,
    },
    /// Every problem in the image, each with byte offset, context path,
    /// rule id and message. Exit 0 valid, 1 invalid, 2 usage or I/O error.
    Validate {
        /// Also apply the seed restorer's rules (xc_hvm_restore at
        /// e2a44bc7a4: pfn range, VGA hole, unpopulated pfns, HVM loader).
        #[arg(long)]
        strict: bool,
        /// The restoring domain's configured memory in MiB (xend's
        /// memory); default: the xend config's, else derived from max_pfn.
        #[arg(long)]
        memory_mib: Option<u64>,
        /// The image, or - for standard input.
        image: String,
    },
    /// Every field of one part of the image (an offline xen-hvmctx).
    Show {
        #[command(subcommand)]
        what: ShowCmd,
    },
    /// SHA-256 of the final guest memory and of each vCPU context, by the
    /// one definition in hvm_format::digest.
    Digest {
        /// Hashing threads, each pinned to its own core (default: one per
        /// core; at most 1024).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
        /// The image, or - for standard input.
        image: String,
    },
    /// What differs between two images: memory (pfn ranges), vCPU
    /// registers, HVM record fields. Exit 0 same, 1 different, 2 error.
    Diff {
        /// First image (or -).
        a: String,
        /// Second image (or -, if A is not).
        b: String,
    },
    /// Convert any legacy image into a migration v2 stream that current
    /// Xen restores (HVM records translated to today's layouts, magic pfns
    /// as HVM_PARAMS, device model state as EMULATOR_CONTEXT); lists every
    /// translation. A v2 image is re-framed, its records copied unchanged.
    /// Exit 1 if something cannot be translated.
    ///
    /// The output is written atomically with mode 0600 and named only when
    /// the conversion succeeded: a failed or interrupted convert leaves
    /// nothing behind. It never replaces an existing file without --force,
    /// nor the input (under any name or link), nor a device, directory or
    /// FIFO; a symbolic link is followed and kept.
    Convert {
        /// Output file, or - for standard output (the report then goes to
        /// standard error).
        #[arg(short, long)]
        output: std::path::PathBuf,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        /// Framing: libxc (bare image), libxl (stream with emulator
        /// record) or xl (`xl save` file).
        #[arg(long, default_value = "xl")]
        to: hvm_inspect::convert::Target,
        /// The image, or - for standard input.
        image: String,
    },
    /// Guest memory out to forensic tools: the final copy of every pfn
    /// (what Xen's restorer leaves; verify-pass copies are not memory) as a
    /// sparse raw file, an ELF core or LiME. Exactly one of --raw, --elf,
    /// --lime.
    ///
    /// --raw: file offset = guest physical address; absent pfns are holes
    /// (never written), the length is the end of the highest page.
    /// --elf: ELF64 ET_CORE for x86-64: a PT_LOAD per run of present pfns
    /// (p_paddr = p_vaddr = guest physical address), NT_PRSTATUS and a QEMU
    /// CPU-state note (CR0-CR4, segments, GDT/IDT) per vCPU. --lime: a
    /// LiME range header per run, then its bytes. See docs/extract.md.
    ///
    /// A damaged image writes nothing and exits 1; an image `validate`
    /// calls INVALID is extracted, says so, and exits 1. The output is
    /// written atomically with mode 0600, never over an existing file
    /// without --force, nor over the input.
    #[command(group(clap::ArgGroup::new("format").required(true).args(["raw", "elf", "lime"])))]
    Extract {
        /// Write a sparse raw file here.
        #[arg(long, value_name = "OUT")]
        raw: Option<std::path::PathBuf>,
        /// Write an ELF64 core file here.
        #[arg(long, value_name = "OUT")]
        elf: Option<std::path::PathBuf>,
        /// Write a LiME file here.
        #[arg(long, value_name = "OUT")]
        lime: Option<std::path::PathBuf>,
        /// Only guest physical addresses START (inclusive) to END
        /// (exclusive), decimal or 0x-hex, multiples of 4096; e.g.
        /// 0x100000-0x200000 is the second MiB.
        #[arg(long, value_name = "START-END")]
        range: Option<hvm_inspect::extract::PhysRange>,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
        /// The image, or - for standard input (spooled, at most
        /// --spool-limit bytes).
        image: String,
    },
    /// Draw an SVG: of an image, pages sent per pass and a memory map of
    /// pfn against pass (the hot set is the rows later passes resend); of
    /// `--stats FILE`, a live save's convergence. Bounded memory, any
    /// dialect.
    Plot(PlotArgs),
}

/// `plot`: what it draws from, and where the SVG goes.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["image", "stats"]))]
struct PlotArgs {
    /// Output SVG file, or - for standard output. Written atomically and
    /// only once drawn; never over an existing file without --force, nor
    /// over the input.
    #[arg(short, long)]
    output: std::path::PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Plot an `hvm-save --stats` file (or - for standard input) instead
    /// of an image: per pass, pages sent, dirty and send rates (pages/s),
    /// the throttle level where recorded, and where pre-copy stopped.
    #[arg(long, value_name = "FILE")]
    stats: Option<String>,
    /// The image, or - for standard input: pages sent per pass (final
    /// round and verify pass marked) and a memory map of which pfns each
    /// pass sent.
    image: Option<String>,
}

#[derive(Subcommand, Debug)]
enum ShowCmd {
    /// Every field of every HVM record (both eras' layouts).
    Hvm {
        /// The image, or - for standard input.
        image: String,
    },
    /// Every field of every vCPU context, padding included.
    Vcpu {
        /// The image, or - for standard input.
        image: String,
    },
    /// Every pfn entry with its file offset and inferred pass.
    Pages {
        /// The image, or - for standard input.
        image: String,
    },
    /// Hexdump of a page's final copy (and of its verify copy if it differs).
    Page {
        /// The pfn, decimal or 0x-hex.
        #[arg(value_parser = parse_pfn)]
        pfn: u64,
        /// The image, or - for standard input.
        image: String,
    },
}

/// Inputs above this get a progress bar (on a terminal).
const PROGRESS_THRESHOLD: u64 = 256 << 20;

fn progress_bar(g: &Global, len: Option<u64>) -> Option<indicatif::ProgressBar> {
    let len = len.filter(|l| *l > PROGRESS_THRESHOLD)?;
    if g.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        pb.set_style(style);
    }
    Some(pb)
}

/// The one error reporter: `hvm-inspect: <path>: at byte N (0x…), <context>:
/// <expected/found>`.
fn report_error(e: &InspectError) {
    let _ = writeln!(std::io::stderr(), "hvm-inspect: {e}");
}

/// Print a report. A write error is an error ([`main`] ends quietly by
/// SIGPIPE for a closed pipe, with status 2 otherwise): never exit 0 with
/// the report lost.
fn emit(g: &Global, out: String) -> Result<(), InspectError> {
    if g.quiet {
        return Ok(());
    }
    hvm_cli::stdout::write(out.as_bytes())
        .map_err(|f| InspectError::Write(std::io::Error::new(f.0.kind(), f.to_string())))
}

/// Print `report` as JSON (`--json`, tagged with `command`) or as `text`
/// renders it.
fn emit_report<T: serde::Serialize>(
    g: &Global,
    command: &str,
    report: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<(), InspectError> {
    emit(
        g,
        if g.json {
            json::render(command, report)
        } else {
            text(report)
        },
    )
}

/// Run `f` with a progress callback drawn as a bar on a terminal's stderr
/// for a large input, and clear the bar when `f` is done.
fn with_progress<T>(
    g: &Global,
    len: Option<u64>,
    f: impl FnOnce(hvm_inspect::input::Progress<'_>) -> T,
) -> T {
    let pb = progress_bar(g, len);
    let cb = |n: u64| {
        if let Some(p) = &pb {
            p.set_position(n)
        }
    };
    let r = f(&cb);
    if let Some(p) = pb {
        p.finish_and_clear();
    }
    r
}

/// One verdict: `show` and `digest` of an image that `validate` calls
/// INVALID exit 1 as `validate` does, and say so on stderr (the report
/// itself is unchanged).
fn invalid(g: &Global, image: &str, v: &report::VerdictReport) -> bool {
    if v.valid {
        return false;
    }
    if !g.quiet {
        let first = v
            .findings
            .iter()
            .find(|f| f.severity == hvm_format::rules::Severity::Error);
        let first = first.map_or(String::new(), |f| {
            format!("; first: {} at byte {}", f.rule, f.offset)
        });
        hvm_cli::stdout::warn(format_args!(
            "hvm-inspect: {image}: INVALID ({} errors{first}); see `hvm-inspect validate`",
            v.errors
        ));
    }
    true
}

/// `show pages`, written as it is read: the listing of an image of any
/// length takes constant memory.
fn show_pages(
    g: &Global,
    input: Input,
    opts: OpenOptions,
    cb: hvm_inspect::input::Progress<'_>,
    image: &str,
    pb: Option<&indicatif::ProgressBar>,
) -> Result<u8, InspectError> {
    let mut so = std::io::stdout().lock();
    // The first write error ends the listing's output and is reported once
    // the walk is over ([`emit`]'s rule: never exit 0 with output lost).
    let mut failed: Option<std::io::Error> = None;
    let mut out = |s: &str| {
        if !g.quiet && failed.is_none() {
            if let Err(e) = so.write_all(s.as_bytes()) {
                failed = Some(e);
            }
        }
    };
    let name = input.name().to_string();
    out(&if g.json {
        json::pages_head(&name)
    } else {
        text::pages_head(&name)
    });
    let mut n = 0u64;
    let (p, verdict) = report::show_pages_streamed(input, opts, cb, &mut |e| {
        out(&if g.json {
            json::page_entry(n, e)
        } else {
            text::page_line(e)
        });
        n += 1;
    })?;
    if let Some(p) = pb {
        p.finish_and_clear();
    }
    out(&if g.json {
        json::pages_tail(&p, n)
    } else {
        text::pages_tail(&p)
    });
    if let Some(e) = failed.or_else(|| so.flush().err()) {
        return Err(InspectError::Write(e));
    }
    Ok(u8::from(p.error.is_some() || invalid(g, image, &verdict)))
}

/// Open an image named on the command line with the global options.
fn open_input(g: &Global, name: &str) -> Result<Input, InspectError> {
    let i = Input::open(name)?;
    Ok(match g.spool_limit {
        Some(n) => i.with_spool_limit(n),
        None => i,
    })
}

/// Dispatch: a bare image means `summary`; each subcommand has its own function.
fn run(cli: Cli) -> Result<u8, InspectError> {
    let g = cli.global;
    let opts = OpenOptions {
        word: g.word,
        ..Default::default()
    };
    let cmd = match (cli.cmd, cli.image) {
        (Some(c), _) => c,
        (None, Some(image)) => Cmd::Summary { image },
        (None, None) => {
            return Err(InspectError::Usage(
                "no image given (try `hvm-inspect --help`)".into(),
            ))
        }
    };
    match cmd {
        Cmd::Summary { image } => cmd_summary(&g, opts, image),
        Cmd::Validate {
            strict,
            memory_mib,
            image,
        } => cmd_validate(&g, opts, strict, memory_mib, image),
        Cmd::Show { what } => cmd_show(&g, opts, what),
        Cmd::Digest { workers, image } => cmd_digest(&g, opts, workers, image),
        Cmd::Diff { a, b } => cmd_diff(&g, opts, a, b),
        Cmd::Convert {
            output,
            force,
            to,
            image,
        } => cmd_convert(&g, opts, output, force, to, image),
        Cmd::Plot(a) => cmd_plot(&g, opts, a),
        Cmd::Extract {
            raw,
            elf,
            lime,
            range,
            force,
            image,
        } => cmd_extract(&g, opts, (raw, elf, lime), range, force, image),
    }
}

/// `summary`: the image described section by section.
fn cmd_summary(g: &Global, opts: OpenOptions, image: String) -> Result<u8, InspectError> {
    let input = open_input(g, &image)?;
    let s = with_progress(g, input.len(), |cb| report::summary(input, opts, cb))?;
    let bad = !s.verdict.valid;
    emit_report(g, "summary", &s, text::summary)?;
    Ok(u8::from(bad))
}

/// `validate`: the verdict alone, exit status 1 when invalid.
fn cmd_validate(
    g: &Global,
    opts: OpenOptions,
    strict: bool,
    memory_mib: Option<u64>,
    image: String,
) -> Result<u8, InspectError> {
    let input = open_input(g, &image)?;
    let check = CheckOptions {
        strict,
        memory_pages: memory_mib.map(|m| m.saturating_mul(256)),
        ..Default::default()
    };
    let v = with_progress(g, input.len(), |cb| {
        report::validate(input, opts, check, cb)
    })?;
    let bad = !v.verdict.valid;
    emit_report(g, "validate", &v, text::validation)?;
    Ok(u8::from(bad))
}

/// `show`: one part of the image in detail; the page listing streams.
fn cmd_show(g: &Global, opts: OpenOptions, what: ShowCmd) -> Result<u8, InspectError> {
    let (image, w, name) = match what {
        ShowCmd::Hvm { image } => (image, ShowWhat::Hvm, "show hvm"),
        ShowCmd::Vcpu { image } => (image, ShowWhat::Vcpu, "show vcpu"),
        ShowCmd::Pages { image } => (image, ShowWhat::Pages, "show pages"),
        ShowCmd::Page { pfn, image } => (image, ShowWhat::Page(pfn), "show page"),
    };
    let input = open_input(g, &image)?;
    let pb = progress_bar(g, input.len());
    let cb = |n: u64| {
        if let Some(p) = &pb {
            p.set_position(n)
        }
    };
    if w == ShowWhat::Pages {
        return show_pages(g, input, opts, &cb, &image, pb.as_ref());
    }
    let (s, verdict) = report::show(input, w, opts, &cb)?;
    if let Some(p) = pb {
        p.finish_and_clear();
    }
    let damaged = s.is_damaged();
    emit(
        g,
        if g.json {
            json::render(name, &s)
        } else {
            text::show(&s)
        },
    )?;
    Ok(u8::from(damaged || invalid(g, &image, &verdict)))
}

/// `digest`: the image's memory and state hashed, as a manifest compares them.
fn cmd_digest(
    g: &Global,
    opts: OpenOptions,
    workers: Option<u16>,
    image: String,
) -> Result<u8, InspectError> {
    let input = open_input(g, &image)?;
    let workers = workers
        .map_or_else(report::digest_workers, usize::from)
        .max(1);
    let (d, verdict) = with_progress(g, input.len(), |cb| {
        report::digest(input, opts, workers, cb)
    })?;
    emit_report(g, "digest", &d, text::digest)?;
    Ok(u8::from(invalid(g, &image, &verdict)))
}

/// `diff`: two images compared; exit status 1 means they differ.
fn cmd_diff(g: &Global, opts: OpenOptions, a: String, b: String) -> Result<u8, InspectError> {
    let (ia, ib) = (open_input(g, &a), open_input(g, &b));
    let (ia, ib) = (ia.map_err(diff_error)?, ib.map_err(diff_error)?);
    let len = ia.len().max(ib.len());
    let d = with_progress(g, len, |cb| diff::diff(ia, ib, opts, cb)).map_err(diff_error)?;
    emit_report(g, "diff", &d, text::diff)?;
    Ok(u8::from(!d.same))
}

/// `convert`: the image rewritten in another dialect, to a file or stdout.
fn cmd_convert(
    g: &Global,
    opts: OpenOptions,
    output: std::path::PathBuf,
    force: bool,
    to: hvm_inspect::convert::Target,
    image: String,
) -> Result<u8, InspectError> {
    use hvm_inspect::convert::{convert_to, render, Destination};
    hvm_cli::signal::remove_temporaries_on_signal();
    let input = open_input(g, &image)?;
    let mut outputs = hvm_cli::Outputs::new();
    let dest = Destination::open(&mut outputs, &image, &output, force)?;
    for p in outputs.take_stale() {
        hvm_cli::stdout::warn(format_args!(
            "hvm-inspect: removed {}, left behind by a run that was killed",
            p.display()
        ));
    }
    let to_stdout = matches!(dest, Destination::Stdout(_));
    let r = convert_to(input, &output, dest, to, opts)?;
    let report = if g.json {
        json::render("convert", &r)
    } else {
        render(&r)
    };
    if to_stdout {
        // Standard output carries the image.
        if !g.quiet {
            let _ = std::io::stderr().write_all(report.as_bytes());
        }
    } else {
        emit(g, report)?;
    }
    Ok(0)
}

/// `plot`: an image's passes, or a stats file, drawn as one SVG.
fn cmd_plot(g: &Global, opts: OpenOptions, a: PlotArgs) -> Result<u8, InspectError> {
    use hvm_inspect::convert::Destination;
    use hvm_inspect::plot;
    hvm_cli::signal::remove_temporaries_on_signal();
    let source = a.stats.as_deref().or(a.image.as_deref()).unwrap_or("-");
    let mut outputs = hvm_cli::Outputs::new();
    let dest = Destination::open(&mut outputs, source, &a.output, a.force)?;
    for p in outputs.take_stale() {
        hvm_cli::stdout::warn(format_args!(
            "hvm-inspect: removed {}, left behind by a run that was killed",
            p.display()
        ));
    }
    let svg = match &a.stats {
        Some(path) => {
            let stats = if path == "-" {
                plot::stats::parse(path, std::io::stdin().lock())?
            } else {
                let f = std::fs::File::open(path).map_err(|source| InspectError::Io {
                    path: path.clone(),
                    source,
                })?;
                plot::stats::parse(path, std::io::BufReader::new(f))?
            };
            plot::stats::render(&stats)?
        }
        None => {
            let input = open_input(g, source)?;
            let p = with_progress(g, input.len(), |cb| plot::image::collect(input, opts, cb))?;
            plot::image::render(&p)?
        }
    };
    plot::write(dest, &svg)?;
    Ok(0)
}

/// `extract`: guest memory into a raw, ELF or LiME file, committed only
/// when complete.
fn cmd_extract(
    g: &Global,
    opts: OpenOptions,
    outs: (
        Option<std::path::PathBuf>,
        Option<std::path::PathBuf>,
        Option<std::path::PathBuf>,
    ),
    range: Option<hvm_inspect::extract::PhysRange>,
    force: bool,
    image: String,
) -> Result<u8, InspectError> {
    use hvm_inspect::extract::{extract, render, Format};
    let (format, output) = match outs {
        (Some(o), None, None) => (Format::Raw, o),
        (None, Some(o), None) => (Format::Elf, o),
        (None, None, Some(o)) => (Format::Lime, o),
        _ => {
            return Err(InspectError::Usage(
                "extract: give exactly one of --raw, --elf, --lime".into(),
            ))
        }
    };
    if output.as_os_str() == "-" {
        return Err(InspectError::Usage(
            "extract: the output must be a file (a raw file is written at any offset)".into(),
        ));
    }
    hvm_cli::signal::remove_temporaries_on_signal();
    let input = open_input(g, &image)?;
    let mut outputs = hvm_cli::Outputs::new();
    outputs.input("input", std::path::Path::new(&image));
    let mut file = outputs.create("output", &output, force)?;
    for p in outputs.take_stale() {
        hvm_cli::stdout::warn(format_args!(
            "hvm-inspect: removed {}, left behind by a run that was killed",
            p.display()
        ));
    }
    let shown = output.display().to_string();
    let (r, verdict) = with_progress(g, input.len(), |cb| {
        extract(input, opts, format, range, &shown, &mut file, cb)
    })?;
    file.commit()?;
    emit_report(g, "extract", &r, render)?;
    Ok(u8::from(invalid(g, &image, &verdict)))
}

/// For `diff`, exit status 1 means "different", so every error is 2.
fn diff_error(e: InspectError) -> InspectError {
    match e {
        InspectError::Image { path, source } => {
            InspectError::Usage(format!("{path}: {source} (cannot diff a damaged image)"))
        }
        other => other,
    }
}

fn main() -> ExitCode {
    let cli = hvm_cli::manual::parse::<Cli>();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(InspectError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            hvm_cli::stdout::die_of_sigpipe()
        }
        Err(e) => {
            report_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}
