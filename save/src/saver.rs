//! The pre-copy loop of `xc_hvm_save` @ `e2a44bc7a4`, with the stop
//! decision handed to a [`Policy`] and every step reported as an [`Event`].
//!
//! Per pass: scan `0..pfn_array_size` in [`Plan::permute`] order; before each
//! batch (pre-copy passes only) peek the dirty log into `to_skip`; send a pfn
//! when it is in `to_send` and not in `to_skip` (the final round ignores
//! `to_skip`), skipping holes and magic pages; map the batch, send failures
//! as XTAB. Between passes CLEAN the dirty log into `to_send` and merge the
//! device model's bitmap (flip to the other buffer while pre-copying, take
//! the active one after suspend). `--debug` adds `-1` and a full resend.
//!
//! Whatever fails, log-dirty is turned off and a guest this run suspended is
//! resumed; the caller then discards its partial output.
//!
//! One deliberate departure from the seed, to keep the loop bounded: the
//! suspend loop's "paused: unpause and retry" branch retried forever; here
//! it counts against the same 100 tries.
//!
//! Another addition, also at the policy's request ([`Policy::throttle`]):
//! after a pre-copy pass the saver sets the guest's throttle
//! ([`Domain::set_throttle`]) to the level the policy wants, and lifts it
//! when the save ends, whether it succeeds, fails or is cancelled. A backend
//! that cannot throttle is told once and the save goes on without.
//!
//! One addition, taken only when the [`Policy`] asks for it
//! ([`Policy::send_while_suspending`]): while the guest acknowledges the
//! suspend request it still runs, and the seed slept through that time. The
//! saver can instead keep cleaning the log and sending what is dirty, in
//! small batches, polling between them ([`Phase::Suspending`]); the final
//! round then holds only pages dirtied after their last copy.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hvm_format::{PfnEntry, WordSize, MAX_BATCH};

use crate::domain::{DirtyBitmap, Domain, DomainError, DomainInfo, HvmParam};
use crate::manifest::{digest_memory, Manifest};
use crate::plan::{MagicPfns, Plan};
use crate::policy::{Decision, PassReport, Policy, RateLimiter, StopReason};
use crate::xend;

/// Tries of the suspend loop (`suspend_and_state`).
pub const SUSPEND_TRIES: u32 = 100;
/// Wait between tries.
pub const SUSPEND_POLL: Duration = Duration::from_millis(10);
/// Batch size while sending during the suspend wait: small, so the saver
/// polls often and notices the stopped guest within about a millisecond.
pub const SUSPENDING_BATCH: usize = 256;
/// Idle wait between polls when nothing is dirty during the suspend wait.
const SUSPENDING_IDLE: Duration = Duration::from_millis(1);

/// What wraps the stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Envelope {
    /// The bare libxc stream, as `xc_save` wrote to its fd.
    #[default]
    Bare,
    /// xend's `LinuxGuestRecord` file (`xm save`).
    Xend {
        /// Domain id and name for the config.
        domid: u32,
        /// Domain name.
        name: String,
    },
}

/// How to save.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Pre-copy with log-dirty while the guest runs (`XCFLAGS_LIVE`).
    pub live: bool,
    /// `XCFLAGS_DEBUG`: after the final round write `-1` and resend all.
    pub debug: bool,
    /// Toolstack word size of the stream (64-bit unless imitating i386).
    pub word: Option<WordSize>,
    /// `--max-rate` in bytes per second.
    pub max_rate: Option<u64>,
    /// Do not resume a guest this run suspended when the save fails.
    pub leave_paused: bool,
    /// Compute the manifest at suspend time.
    pub manifest: bool,
    /// Put every page's own digest in the manifest, so a restore check names
    /// the pfn that differs, not only its 2 MiB range (≈ 90 bytes of JSON a
    /// page).
    pub page_digests: bool,
    /// Threads hashing the manifest (pinned); 0 means 2.
    pub digest_workers: usize,
    /// Stream framing.
    pub envelope: Envelope,
    /// Set from a signal handler: the save stops with [`SaveError::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Which kind of pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Guest running, log-dirty on.
    PreCopy,
    /// Suspend requested, guest still running: sending what it dirties until
    /// it stops ([`Policy::send_while_suspending`]).
    Suspending,
    /// Guest suspended: the stop-and-copy round (or the only pass of a
    /// non-live save).
    Final,
    /// The `--debug` resend after the `-1` marker.
    Verify,
}

/// Statistics of one pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PassStats {
    /// 1-based pass number.
    pub iter: u32,
    /// Kind of pass.
    pub phase: Phase,
    /// Entries sent (XTAB included).
    pub sent: u64,
    /// Pages deferred because already re-dirtied.
    pub skipped: u64,
    /// Entries sent as XTAB.
    pub xtab: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Duration on the domain's clock, µs.
    pub duration_us: u64,
    /// Send rate over the pass, MB/s (10^6).
    pub mb_per_s: f64,
    /// Pages dirtied during the pass (CLEAN's `dirty_count`), pre-copy only.
    pub dirtied: Option<u64>,
    /// Pages dirty at the end of the pass, when the policy peeked.
    pub dirty_now: Option<u64>,
    /// Dirtying rate, pages per second, pre-copy only.
    pub dirty_pages_per_s: Option<f64>,
    /// Why pre-copy ended after this pass, if it did.
    pub stop: Option<StopReason>,
    /// Throttle on the guest during the pass, percent (0: none).
    pub throttle_percent: u8,
    /// The guest's progress over the pass, steps per second
    /// ([`Domain::guest_progress`]); `None` where the backend has no
    /// counter. What a throttle costs the guest shows here.
    pub guest_rate: Option<f64>,
}

impl PassStats {
    /// A pass's sending figures, `[sent, skipped, xtab, bytes]`, over
    /// `duration`; the dirty-log figures are filled in afterwards.
    fn sent(
        iter: u32,
        phase: Phase,
        [sent, skipped, xtab, bytes]: [u64; 4],
        duration: Duration,
    ) -> Self {
        PassStats {
            iter,
            phase,
            sent,
            skipped,
            xtab,
            bytes,
            duration_us: duration.as_micros() as u64,
            mb_per_s: if duration.is_zero() {
                0.0
            } else {
                bytes as f64 / duration.as_secs_f64() / 1e6
            },
            dirtied: None,
            dirty_now: None,
            dirty_pages_per_s: None,
            stop: None,
            throttle_percent: 0,
            guest_rate: None,
        }
    }
}

/// The whole save in numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SaveSummary {
    /// Policy name.
    pub policy: String,
    /// Live save.
    pub live: bool,
    /// Passes, the verify pass included.
    pub passes: u32,
    /// Entries sent over all passes.
    pub total_sent: u64,
    /// `pfn_array_size`.
    pub pfn_array_size: u64,
    /// `total_sent / pfn_array_size`.
    pub factor: f64,
    /// Pages sent while the guest was suspended (final round).
    pub downtime_pages: u64,
    /// From the guest reporting suspended to the last record, µs (domain
    /// clock): the time the guest does not run. While sending during the
    /// suspend wait it counts from the last poll that found the guest
    /// running, so a guest stopping mid-batch is never under-reported.
    pub downtime_us: u64,
    /// Bytes of the stream (envelope excluded).
    pub stream_bytes: u64,
    /// Why pre-copy ended.
    pub stop: StopReason,
    /// vCPU records written.
    pub vcpus: u32,
    /// Highest throttle put on the guest, percent (0: never throttled).
    pub throttle_peak_percent: u8,
    /// From the first throttle step to the guest's suspend, µs (domain
    /// clock): how long the guest ran slowed down.
    pub throttled_us: u64,
}

/// Something the saver did, for progress displays and stats files.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Layout decided, first word written.
    Started {
        /// The layout.
        plan: &'a Plan,
        /// Live save.
        live: bool,
    },
    /// A pass begins.
    PassStarted {
        /// Pass number.
        iter: u32,
        /// Kind.
        phase: Phase,
    },
    /// A batch went out.
    BatchWritten {
        /// Pass number.
        iter: u32,
        /// Entries in the batch.
        entries: usize,
        /// Of them XTAB.
        xtab: usize,
        /// Scan position after the batch (out of `pfn_array_size`).
        scanned: u64,
    },
    /// A pass ended.
    PassEnded(&'a PassStats),
    /// The guest is suspended.
    Suspended {
        /// After this many passes.
        iter: u32,
    },
    /// The guest's throttle changed (after pre-copy pass `iter`).
    Throttle {
        /// After this pass.
        iter: u32,
        /// Percent of each period the vCPUs sleep from now on.
        percent: u8,
    },
    /// A recoverable problem (the seed's warnings).
    Warning(&'a str),
    /// The image is complete.
    Done(&'a SaveSummary),
}

/// Why a save failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// A backend call failed.
    #[error("domain: {0}")]
    Domain(#[from] DomainError),
    /// Writing the stream failed (a closed pipe or peer shows up here).
    #[error("writing the image: {0}")]
    Stream(#[from] hvm_format::Error),
    /// Writing the envelope failed.
    #[error("writing the image: {0}")]
    Io(#[from] std::io::Error),
    /// The domain did not reach the suspended state.
    #[error("domain did not suspend: {0}")]
    Suspend(String),
    /// The domain's state makes no sense for a save.
    #[error("invalid domain: {0}")]
    InvalidDomain(String),
    /// Interrupted by SIGINT/SIGTERM (or the caller's flag).
    #[error("cancelled")]
    Cancelled,
}

/// A finished save.
#[derive(Debug, Clone)]
pub struct SaveOutcome {
    /// Numbers.
    pub summary: SaveSummary,
    /// Per-pass statistics.
    pub passes: Vec<PassStats>,
    /// The manifest, when asked for.
    pub manifest: Option<Manifest>,
}

/// What cleanup must undo.
#[derive(Default)]
struct Undo {
    log_dirty: bool,
    suspended: bool,
    throttled: bool,
}

/// Save `domain` into `out` under `policy`. On success the guest stays
/// suspended (as xend expected: it destroys or migrates it next); on error
/// log-dirty is off, the guest resumed (unless `leave_paused`), and `out`
/// holds a partial stream the caller must discard.
pub fn save<D, W>(
    domain: &mut D,
    policy: &mut dyn Policy,
    opts: &SaveOptions,
    out: &mut W,
    observer: &mut dyn FnMut(&Event<'_>),
) -> Result<SaveOutcome, SaveError>
where
    D: Domain + ?Sized,
    W: Write,
{
    let mut undo = Undo::default();
    let r = run(domain, policy, opts, out, observer, &mut undo);
    if undo.throttled {
        // Only an error gets here with the throttle on (success lifts it
        // before the summary): lift it before the guest resumes.
        let _ = domain.set_throttle(0);
    }
    if r.is_err() {
        if undo.log_dirty {
            let _ = domain.log_dirty_off();
        }
        if undo.suspended && !opts.leave_paused {
            let _ = domain.resume();
        }
    }
    r
}

fn cancelled(opts: &SaveOptions) -> bool {
    opts.cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
}

/// `suspend_and_state`: ask, then poll `info` until the domain reports a
/// suspend shutdown.
fn suspend_and_state<D: Domain + ?Sized>(
    domain: &mut D,
    undo: &mut Undo,
) -> Result<DomainInfo, SaveError> {
    if !domain.request_suspend()? {
        return Err(SaveError::Suspend("suspend request failed".into()));
    }
    undo.suspended = true;
    for _ in 0..SUSPEND_TRIES {
        let info = domain.info()?;
        if info.suspended {
            return Ok(info);
        }
        if info.paused {
            domain.unpause()?;
        }
        domain.sleep(SUSPEND_POLL);
    }
    Err(SaveError::Suspend(format!(
        "still running after {SUSPEND_TRIES} polls"
    )))
}

/// Map `batch`, write it as one stream batch (pages that fail to map as
/// XTAB entries without data) and honour `--max-rate`. Returns the bytes
/// written and the number of XTAB entries.
fn send_batch<D, W>(
    domain: &mut D,
    writer: &mut hvm_format::stream::Writer<W>,
    batch: &[u64],
    entries: &mut Vec<PfnEntry>,
    limiter: Option<&mut RateLimiter>,
) -> Result<(u64, usize), SaveError>
where
    D: Domain + ?Sized,
    W: Write,
{
    let map = domain.map_batch(batch)?;
    entries.clear();
    let mut pages: Vec<&[u8]> = Vec::with_capacity(batch.len());
    for (j, &n) in batch.iter().enumerate() {
        match map.page(j) {
            Some(p) => {
                entries.push(PfnEntry::page(n));
                pages.push(p);
            }
            None => entries.push(PfnEntry::xtab(n)),
        }
    }
    let before = writer.position();
    writer.batch(entries, &pages)?;
    let nx = entries.len() - pages.len();
    drop(pages);
    drop(map);
    let b = writer.position() - before;
    if let Some(l) = limiter {
        let wait = l.account(domain.now(), b);
        if !wait.is_zero() {
            domain.sleep(wait);
        }
    }
    Ok((b, nx))
}

/// The suspend wait spent sending ([`Policy::send_while_suspending`]).
///
/// Each round polls the domain, CLEANs the log into `carry` (everything
/// dirtied and not sent since) and sends up to [`SUSPENDING_BATCH`] of those
/// pages in scan order, clearing their bits: a page copied after the CLEAN
/// that reported it holds that write, and a later write shows up in the next
/// CLEAN. When the guest has stopped, `carry` holds exactly what the final
/// round must add to the last CLEAN.
struct Suspending<'a> {
    iter: u32,
    carry: &'a mut DirtyBitmap,
    scratch: &'a mut DirtyBitmap,
    batch: &'a mut Vec<u64>,
    entries: &'a mut Vec<PfnEntry>,
}

impl Suspending<'_> {
    /// Request the suspend and send until the guest stops. Returns the last
    /// time the guest was seen running (the start of its downtime, rounded
    /// down) and the pass's statistics if anything was sent.
    #[allow(clippy::too_many_arguments)]
    fn run<D, W>(
        &mut self,
        domain: &mut D,
        undo: &mut Undo,
        opts: &SaveOptions,
        plan: &Plan,
        writer: &mut hvm_format::stream::Writer<W>,
        limiter: &mut Option<RateLimiter>,
        observer: &mut dyn FnMut(&Event<'_>),
    ) -> Result<(Duration, Option<PassStats>), SaveError>
    where
        D: Domain + ?Sized,
        W: Write,
    {
        self.carry.clear_all();
        if !domain.request_suspend()? {
            return Err(SaveError::Suspend("suspend request failed".into()));
        }
        undo.suspended = true;
        let t0 = domain.now();
        // The seed's patience (100 polls of 10 ms) as a deadline on the
        // domain's clock, and a poll cap in case that clock stands still.
        let deadline = t0 + SUSPEND_POLL * SUSPEND_TRIES;
        let max_polls = SUSPEND_TRIES as u64 * 1000;
        // `[sent, xtab, bytes]` once the first batch went out.
        let mut totals: Option<[u64; 3]> = None;
        let mut cursor = 0u64;
        let mut running_at = t0;
        for _ in 0..max_polls {
            if cancelled(opts) {
                return Err(SaveError::Cancelled);
            }
            let now = domain.now();
            let info = domain.info()?;
            if info.suspended {
                let duration = domain.now().saturating_sub(t0);
                let stats = totals.map(|[sent, xtab, bytes]| {
                    PassStats::sent(
                        self.iter,
                        Phase::Suspending,
                        [sent, 0, xtab, bytes],
                        duration,
                    )
                });
                return Ok((running_at, stats));
            }
            running_at = now;
            if now > deadline {
                break;
            }
            if info.paused {
                domain.unpause()?;
            }
            domain.log_dirty_clean(self.scratch)?;
            self.carry.merge(self.scratch);
            cursor = self.pick(plan, cursor);
            if self.batch.is_empty() {
                domain.sleep(SUSPENDING_IDLE);
                continue;
            }
            let t = totals.get_or_insert_with(|| {
                observer(&Event::PassStarted {
                    iter: self.iter,
                    phase: Phase::Suspending,
                });
                [0; 3]
            });
            self.send(domain, writer, limiter, observer, cursor, t)?;
        }
        Err(SaveError::Suspend(format!(
            "still running {} ms after the request",
            domain.now().saturating_sub(t0).as_millis()
        )))
    }

    /// Send the picked batch and add it to `totals` (`[sent, xtab, bytes]`).
    fn send<D, W>(
        &mut self,
        domain: &mut D,
        writer: &mut hvm_format::stream::Writer<W>,
        limiter: &mut Option<RateLimiter>,
        observer: &mut dyn FnMut(&Event<'_>),
        cursor: u64,
        totals: &mut [u64; 3],
    ) -> Result<(), SaveError>
    where
        D: Domain + ?Sized,
        W: Write,
    {
        let (b, nx) = send_batch(domain, writer, self.batch, self.entries, limiter.as_mut())?;
        totals[0] += self.batch.len() as u64;
        totals[1] += nx as u64;
        totals[2] += b;
        observer(&Event::BatchWritten {
            iter: self.iter,
            entries: self.batch.len(),
            xtab: nx,
            scanned: cursor,
        });
        Ok(())
    }

    /// Fill `batch` with up to [`SUSPENDING_BATCH`] pages of `carry`, in
    /// scan order from `cursor`, clearing their bits; at most one full scan.
    /// Returns where the next round's scan starts.
    fn pick(&mut self, plan: &Plan, mut cursor: u64) -> u64 {
        let size = plan.pfn_array_size;
        self.batch.clear();
        let mut scanned = 0u64;
        while self.batch.len() < SUSPENDING_BATCH && scanned < size {
            let n = plan.permute(cursor);
            cursor = (cursor + 1) % size;
            scanned += 1;
            if self.carry.test(n) && !plan.is_skipped(n) {
                self.carry.clear(n);
                self.batch.push(n);
            }
        }
        cursor
    }
}

/// The save in order: examine the domain, open the stream, run the passes,
/// write the tail, then the manifest and the summary.
fn run<D, W>(
    domain: &mut D,
    policy: &mut dyn Policy,
    opts: &SaveOptions,
    out: &mut W,
    observer: &mut dyn FnMut(&Event<'_>),
    undo: &mut Undo,
) -> Result<SaveOutcome, SaveError>
where
    D: Domain + ?Sized,
    W: Write,
{
    let live = opts.live;
    let word = opts.word.unwrap_or(WordSize::W64);
    let start = examine(domain)?;
    let nr_vcpus = start.info.nr_online_vcpus;
    write_xend_header(out, opts, &start)?;
    let (plan, suspend_at) = begin(domain, opts, undo, observer, start)?;

    let mut writer = hvm_format::stream::Writer::new(&mut *out, word);
    writer.max_pfn(plan.max_pfn)?;
    observer(&Event::Started { plan: &plan, live });

    let mut passes = Passes::new(&plan, opts, suspend_at);
    passes.run(domain, policy, undo, &mut writer, observer)?;
    if undo.throttled {
        // The guest is suspended: the throttle has done its job.
        if let Err(e) = domain.set_throttle(0) {
            observer(&Event::Warning(&format!("couldn't lift the throttle: {e}")));
        }
        undo.throttled = false;
    }

    let tail = write_vcpus_and_hvm(domain, writer, nr_vcpus)?;
    let downtime = passes
        .suspend_at
        .map_or(Duration::ZERO, |t| domain.now().saturating_sub(t));
    if matches!(opts.envelope, Envelope::Xend { .. }) {
        let qevm = domain.device_model_state()?;
        xend::write_tail(out, qevm.as_deref())?;
    }
    out.flush()?;

    let manifest = if opts.manifest {
        Some(build_manifest(domain, opts, &plan, &tail)?)
    } else {
        None
    };
    if undo.log_dirty {
        if let Err(e) = domain.log_dirty_off() {
            observer(&Event::Warning(&format!("couldn't disable log-dirty: {e}")));
        }
        undo.log_dirty = false;
    }

    let size = plan.pfn_array_size;
    let summary = SaveSummary {
        policy: if live { policy.name() } else { "non-live" }.to_string(),
        live,
        passes: passes.iter,
        total_sent: passes.total_sent,
        pfn_array_size: size,
        factor: passes.total_sent as f64 / size as f64,
        downtime_pages: passes.downtime_pages,
        downtime_us: downtime.as_micros() as u64,
        stream_bytes: tail.stream_bytes,
        stop: passes.stop,
        vcpus: nr_vcpus,
        throttle_peak_percent: passes.throttle_peak,
        throttled_us: passes
            .throttle_since
            .map_or(Duration::ZERO, |t| {
                passes
                    .suspend_at
                    .unwrap_or_else(|| domain.now())
                    .saturating_sub(t)
            })
            .as_micros() as u64,
    };
    observer(&Event::Done(&summary));
    Ok(SaveOutcome {
        summary,
        passes: passes.stats,
        manifest,
    })
}

/// What the save learns from the domain before writing anything.
struct Start {
    info: DomainInfo,
    stdvga: bool,
    magic: MagicPfns,
}

/// Read the platform, the domain and its magic pfns, refusing a domain
/// larger than the host can address before a byte is written.
fn examine<D: Domain + ?Sized>(domain: &mut D) -> Result<Start, SaveError> {
    let platform = domain.platform()?;
    let info = domain.info()?;
    if (info.max_memkb >> 2) > platform.max_mfn {
        return Err(SaveError::InvalidDomain(format!(
            "pfn count out of range: {} pages > max_mfn {:#x}",
            info.max_memkb >> 2,
            platform.max_mfn
        )));
    }
    let magic = MagicPfns {
        store: domain.hvm_param(HvmParam::StorePfn)?,
        ioreq: domain.hvm_param(HvmParam::IoreqPfn)?,
        bufioreq: domain.hvm_param(HvmParam::BufIoreqPfn)?,
    };
    Ok(Start {
        info,
        stdvga: platform.stdvga,
        magic,
    })
}

/// xend's config record goes before the stream, so it is written first.
fn write_xend_header<W: Write>(
    out: &mut W,
    opts: &SaveOptions,
    start: &Start,
) -> Result<(), SaveError> {
    if let Envelope::Xend { domid, name } = &opts.envelope {
        let cfg = xend::GuestConfig {
            domid: *domid,
            name: name.clone(),
            memory_mib: start.info.max_memkb / 1024,
            vcpus: start.info.nr_online_vcpus,
            stdvga: start.stdvga,
        };
        xend::write_header(out, &cfg)?;
    }
    Ok(())
}

/// Turn log-dirty on for a live save, or suspend at once for a non-live
/// one (whose page count is then read from the stopped guest), and derive
/// the layout. Returns the plan and when the guest stopped, if it did.
fn begin<D: Domain + ?Sized>(
    domain: &mut D,
    opts: &SaveOptions,
    undo: &mut Undo,
    observer: &mut dyn FnMut(&Event<'_>),
    start: Start,
) -> Result<(Plan, Option<Duration>), SaveError> {
    let mut info = start.info;
    let mut suspend_at = None;
    if opts.live {
        domain.log_dirty_enable()?;
        undo.log_dirty = true;
    } else {
        info = suspend_and_state(domain, undo)?;
        suspend_at = Some(domain.now());
        observer(&Event::Suspended { iter: 0 });
    }
    let plan = Plan::derive(info.nr_pages, opts.live, start.stdvga, start.magic);
    if opts.live {
        domain.dm_dirty_init(plan.pfn_array_size)?;
    }
    Ok((plan, suspend_at))
}

/// What the stream's tail carries, kept for the manifest.
struct Tail {
    contexts: Vec<Vec<u8>>,
    blob: Vec<u8>,
    stream_bytes: u64,
}

/// The stream after the last page batch: end marker, vCPU contexts and
/// the HVM blob, then the stream's length.
fn write_vcpus_and_hvm<D, W>(
    domain: &mut D,
    mut writer: hvm_format::stream::Writer<W>,
    nr_vcpus: u32,
) -> Result<Tail, SaveError>
where
    D: Domain + ?Sized,
    W: Write,
{
    writer.end()?;
    writer.vcpu_count(nr_vcpus)?;
    let mut contexts = Vec::with_capacity(nr_vcpus as usize);
    for i in 0..nr_vcpus {
        let ctx = domain.vcpu_context(i)?;
        writer.vcpu(&ctx)?;
        contexts.push(ctx);
    }
    let blob = domain.hvm_context()?;
    writer.hvm_blob(&blob)?;
    let stream_bytes = writer.position();
    writer.finish()?;
    Ok(Tail {
        contexts,
        blob,
        stream_bytes,
    })
}

/// Digest the suspended guest's memory and state, so a restore can be
/// checked against what was saved.
fn build_manifest<D: Domain + ?Sized>(
    domain: &mut D,
    opts: &SaveOptions,
    plan: &Plan,
    tail: &Tail,
) -> Result<Manifest, SaveError> {
    let workers = if opts.digest_workers == 0 {
        2
    } else {
        opts.digest_workers
    };
    let mut pages = opts.page_digests.then(Vec::new);
    let mem = digest_memory(domain, plan, workers, pages.as_mut())?;
    let mut m = Manifest::new(plan.max_pfn, &mem, &tail.contexts, &tail.blob);
    if let Some(p) = &pages {
        m.set_page_digests(p);
    }
    Ok(m)
}

/// The state the passes share: what is left to send, the dirty-log
/// buffers, the device model's active buffer and the running totals.
struct Passes<'a> {
    plan: &'a Plan,
    opts: &'a SaveOptions,
    to_send: DirtyBitmap,
    to_skip: DirtyBitmap,
    scratch: DirtyBitmap,
    limiter: Option<RateLimiter>,
    batch: Vec<u64>,
    entries: Vec<PfnEntry>,
    /// The device model's dirty buffer being filled (the other one is read).
    qemu_active: usize,
    /// Set once the guest is suspended: the final round (or verify) runs.
    last_iter: bool,
    /// `--debug` still owes its `-1` marker and full resend.
    debug: bool,
    /// The current pass is the `--debug` resend.
    verify: bool,
    iter: u32,
    total_sent: u64,
    sent_last: u64,
    downtime_pages: u64,
    suspend_at: Option<Duration>,
    stop: StopReason,
    stats: Vec<PassStats>,
    /// Throttle in force, its highest level, and when the first step began.
    throttle: u8,
    throttle_peak: u8,
    throttle_since: Option<Duration>,
}

impl<'a> Passes<'a> {
    /// Everything to send, nothing to skip; a non-live save starts at its
    /// final round.
    fn new(plan: &'a Plan, opts: &'a SaveOptions, suspend_at: Option<Duration>) -> Self {
        let size = plan.pfn_array_size;
        let mut to_send = DirtyBitmap::new(size);
        to_send.fill();
        Passes {
            plan,
            opts,
            to_send,
            to_skip: DirtyBitmap::new(size),
            scratch: DirtyBitmap::new(size),
            limiter: opts.max_rate.map(RateLimiter::new),
            batch: Vec::with_capacity(MAX_BATCH),
            entries: Vec::with_capacity(MAX_BATCH),
            qemu_active: 0,
            last_iter: !opts.live,
            debug: opts.debug,
            verify: false,
            iter: 0,
            total_sent: 0,
            sent_last: size,
            downtime_pages: 0,
            suspend_at,
            stop: StopReason::NotLive,
            stats: Vec::new(),
            throttle: 0,
            throttle_peak: 0,
            throttle_since: None,
        }
    }

    /// Pass after pass until the final round (and `--debug`'s resend) is out.
    fn run<D, W>(
        &mut self,
        domain: &mut D,
        policy: &mut dyn Policy,
        undo: &mut Undo,
        writer: &mut hvm_format::stream::Writer<W>,
        observer: &mut dyn FnMut(&Event<'_>),
    ) -> Result<(), SaveError>
    where
        D: Domain + ?Sized,
        W: Write,
    {
        loop {
            self.iter += 1;
            let phase = match (self.last_iter, self.verify) {
                (false, _) => Phase::PreCopy,
                (true, false) => Phase::Final,
                (true, true) => Phase::Verify,
            };
            observer(&Event::PassStarted {
                iter: self.iter,
                phase,
            });
            let t0 = domain.now();
            let progress0 = domain.guest_progress();
            let counts = self.scan(domain, writer, observer)?;
            self.total_sent += counts[0];
            let duration = domain.now().saturating_sub(t0);
            let mut stats = PassStats::sent(self.iter, phase, counts, duration);
            stats.throttle_percent = self.throttle;
            stats.guest_rate = match (progress0, domain.guest_progress()) {
                (Some(a), Some(b)) if !duration.is_zero() => {
                    Some(b.saturating_sub(a) as f64 / duration.as_secs_f64())
                }
                _ => None,
            };
            if phase == Phase::Final {
                self.downtime_pages = counts[0];
            }
            if !self.last_iter {
                self.after_precopy(domain, policy, undo, writer, observer, stats, duration)?;
                continue;
            }
            let resend = self.debug;
            if resend {
                self.to_send.fill();
                self.debug = false;
                self.verify = true;
                writer.verify_marker()?;
            }
            observer(&Event::PassEnded(&stats));
            self.stats.push(stats);
            if !resend {
                return Ok(());
            }
        }
    }

    /// One scan of `0..pfn_array_size` in permuted order, sending in
    /// batches what is due. Returns `[sent, skipped, xtab, bytes]`.
    fn scan<D, W>(
        &mut self,
        domain: &mut D,
        writer: &mut hvm_format::stream::Writer<W>,
        observer: &mut dyn FnMut(&Event<'_>),
    ) -> Result<[u64; 4], SaveError>
    where
        D: Domain + ?Sized,
        W: Write,
    {
        let size = self.plan.pfn_array_size;
        let last_iter = self.last_iter;
        let (mut sent, mut skipped, mut xtab, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        let mut n_scan = 0u64;
        while n_scan < size {
            if cancelled(self.opts) {
                return Err(SaveError::Cancelled);
            }
            if !last_iter {
                domain.log_dirty_peek(&mut self.to_skip)?;
            }
            self.batch.clear();
            while self.batch.len() < MAX_BATCH && n_scan < size {
                let n = self.plan.permute(n_scan);
                n_scan += 1;
                let send = self.to_send.test(n);
                let dirty = self.to_skip.test(n);
                if !last_iter && send && dirty {
                    skipped += 1;
                }
                if !(send && (!dirty || last_iter)) || self.plan.is_skipped(n) {
                    continue;
                }
                self.batch.push(n);
            }
            if self.batch.is_empty() {
                // A batch fills until 1024 entries or the end of the scan, so
                // an empty one means the scan is over (the seed's `goto skip`).
                break;
            }
            let limiter = self.limiter.as_mut();
            let (b, nx) = send_batch(domain, writer, &self.batch, &mut self.entries, limiter)?;
            bytes += b;
            sent += self.batch.len() as u64;
            xtab += nx as u64;
            observer(&Event::BatchWritten {
                iter: self.iter,
                entries: self.batch.len(),
                xtab: nx,
                scanned: n_scan,
            });
        }
        Ok([sent, skipped, xtab, bytes])
    }

    /// A pre-copy pass is done: ask the policy whether to stop, suspend if
    /// so, and collect what was dirtied for the next pass.
    #[allow(clippy::too_many_arguments)]
    fn after_precopy<D, W>(
        &mut self,
        domain: &mut D,
        policy: &mut dyn Policy,
        undo: &mut Undo,
        writer: &mut hvm_format::stream::Writer<W>,
        observer: &mut dyn FnMut(&Event<'_>),
        mut stats: PassStats,
        duration: Duration,
    ) -> Result<(), SaveError>
    where
        D: Domain + ?Sized,
        W: Write,
    {
        let dirty_now = if policy.wants_dirty_count() {
            domain.log_dirty_peek(&mut self.scratch)?;
            Some(self.scratch.count())
        } else {
            None
        };
        let report = PassReport {
            iter: self.iter,
            sent: stats.sent,
            skipped: stats.skipped,
            total_sent: self.total_sent,
            sent_last: self.sent_last,
            pfn_array_size: self.plan.pfn_array_size,
            bytes: stats.bytes,
            duration,
            dirty_now,
        };
        stats.dirty_now = dirty_now;
        let decision = policy.after_pass(&report);
        if decision == Decision::Continue {
            self.apply_throttle(domain, policy, undo, observer)?;
        }
        if let Decision::StopAndCopy(why) = decision {
            self.stop = why;
            stats.stop = Some(why);
            self.last_iter = true;
            if policy.send_while_suspending() {
                // The decided pass ends here; the wait is a pass of its own
                // when the guest did not stop at once.
                observer(&Event::PassEnded(&stats));
                self.stats.push(stats);
                return self.suspend_sending(domain, undo, writer, observer);
            }
            suspend_and_state(domain, undo)?;
            self.suspend_at = Some(domain.now());
            observer(&Event::Suspended { iter: self.iter });
        }
        self.collect_dirty(domain, observer, stats, duration)
    }

    /// Set the guest's throttle to what the policy wants now. A backend
    /// that cannot throttle turns throttling off for the rest of the save.
    fn apply_throttle<D: Domain + ?Sized>(
        &mut self,
        domain: &mut D,
        policy: &mut dyn Policy,
        undo: &mut Undo,
        observer: &mut dyn FnMut(&Event<'_>),
    ) -> Result<(), SaveError> {
        let want = policy.throttle().min(crate::domain::MAX_THROTTLE);
        if want == self.throttle {
            return Ok(());
        }
        // Marked before the call: a backend that fails half-way is still
        // told to lift it.
        undo.throttled = true;
        match domain.set_throttle(want) {
            Ok(()) => {}
            Err(DomainError::Unavailable(why)) => {
                policy.throttle_unavailable();
                observer(&Event::Warning(&format!("not throttling the guest: {why}")));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        if want > 0 && self.throttle_since.is_none() {
            self.throttle_since = Some(domain.now());
        }
        self.throttle = want;
        self.throttle_peak = self.throttle_peak.max(want);
        observer(&Event::Throttle {
            iter: self.iter,
            percent: want,
        });
        Ok(())
    }

    /// CLEAN the log into `to_send` and merge the device model's bitmap:
    /// flip buffers while the guest runs, take the active one once it is
    /// suspended. Records the pass's dirtying figures and ends the pass.
    fn collect_dirty<D: Domain + ?Sized>(
        &mut self,
        domain: &mut D,
        observer: &mut dyn FnMut(&Event<'_>),
        mut stats: PassStats,
        duration: Duration,
    ) -> Result<(), SaveError> {
        let clean = domain.log_dirty_clean(&mut self.to_send)?;
        stats.dirtied = Some(clean.dirty_count);
        stats.dirty_pages_per_s =
            (!duration.is_zero()).then(|| clean.dirty_count as f64 / duration.as_secs_f64());
        if !self.last_iter {
            self.qemu_active = 1 - self.qemu_active;
            domain.dm_flip(self.qemu_active)?;
            domain.dm_take(1 - self.qemu_active, &mut self.to_send, true)?;
        } else {
            domain.dm_take(self.qemu_active, &mut self.to_send, false)?;
        }
        self.sent_last = stats.sent;
        observer(&Event::PassEnded(&stats));
        self.stats.push(stats);
        Ok(())
    }

    /// The suspend wait spent sending ([`Policy::send_while_suspending`]),
    /// then the final round's set: the last CLEAN plus what the wait left
    /// dirty and unsent.
    fn suspend_sending<D, W>(
        &mut self,
        domain: &mut D,
        undo: &mut Undo,
        writer: &mut hvm_format::stream::Writer<W>,
        observer: &mut dyn FnMut(&Event<'_>),
    ) -> Result<(), SaveError>
    where
        D: Domain + ?Sized,
        W: Write,
    {
        // `to_skip` has served its purpose: pre-copy is over.
        let mut wait = Suspending {
            iter: self.iter + 1,
            carry: &mut self.to_skip,
            scratch: &mut self.scratch,
            batch: &mut self.batch,
            entries: &mut self.entries,
        };
        let (running_at, wait_stats) = wait.run(
            domain,
            undo,
            self.opts,
            self.plan,
            writer,
            &mut self.limiter,
            observer,
        )?;
        self.suspend_at = Some(running_at);
        let clean = domain.log_dirty_clean(&mut self.to_send)?;
        self.to_send.merge(&self.to_skip);
        domain.dm_take(self.qemu_active, &mut self.to_send, false)?;
        if let Some(mut w) = wait_stats {
            self.iter += 1;
            self.total_sent += w.sent;
            w.dirtied = Some(clean.dirty_count);
            observer(&Event::Suspended { iter: self.iter });
            observer(&Event::PassEnded(&w));
            self.stats.push(w);
        } else {
            observer(&Event::Suspended { iter: self.iter });
        }
        Ok(())
    }
}
