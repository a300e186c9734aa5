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
        let size = plan.pfn_array_size;
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
        let (mut sent, mut xtab, mut bytes) = (0u64, 0u64, 0u64);
        let mut cursor = 0u64;
        let mut running_at = t0;
        let mut started = false;
        for _ in 0..max_polls {
            if cancelled(opts) {
                return Err(SaveError::Cancelled);
            }
            let now = domain.now();
            let info = domain.info()?;
            if info.suspended {
                let duration = domain.now().saturating_sub(t0);
                let stats = started.then(|| {
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
            if self.batch.is_empty() {
                domain.sleep(SUSPENDING_IDLE);
                continue;
            }
            if !started {
                started = true;
                observer(&Event::PassStarted {
                    iter: self.iter,
                    phase: Phase::Suspending,
                });
            }
            let (b, nx) = send_batch(domain, writer, self.batch, self.entries, limiter.as_mut())?;
            bytes += b;
            sent += self.batch.len() as u64;
            xtab += nx as u64;
            observer(&Event::BatchWritten {
                iter: self.iter,
                entries: self.batch.len(),
                xtab: nx,
                scanned: cursor,
            });
        }
        Err(SaveError::Suspend(format!(
            "still running {} ms after the request",
            domain.now().saturating_sub(t0).as_millis()
        )))
    }
}

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
    let platform = domain.platform()?;
    let mut info = domain.info()?;
    let nr_vcpus = info.nr_online_vcpus;
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

    if let Envelope::Xend { domid, name } = &opts.envelope {
        let cfg = xend::GuestConfig {
            domid: *domid,
            name: name.clone(),
            memory_mib: info.max_memkb / 1024,
            vcpus: nr_vcpus,
            stdvga: platform.stdvga,
        };
        xend::write_header(out, &cfg)?;
    }

    let mut last_iter = !live;
    let mut suspend_at = None;
    let mut stop = StopReason::NotLive;
    if live {
        domain.log_dirty_enable()?;
        undo.log_dirty = true;
    } else {
        info = suspend_and_state(domain, undo)?;
        suspend_at = Some(domain.now());
        observer(&Event::Suspended { iter: 0 });
    }

    let plan = Plan::derive(info.nr_pages, live, platform.stdvga, magic);
    let size = plan.pfn_array_size;
    let (mut qemu_active, mut qemu_non_active) = (0usize, 1usize);
    if live {
        domain.dm_dirty_init(size)?;
    }

    let mut to_send = DirtyBitmap::new(size);
    to_send.fill();
    let mut to_skip = DirtyBitmap::new(size);
    let mut scratch = DirtyBitmap::new(size);
    let mut limiter = opts.max_rate.map(RateLimiter::new);

    let mut writer = hvm_format::stream::Writer::new(&mut *out, word);
    writer.max_pfn(plan.max_pfn)?;
    observer(&Event::Started { plan: &plan, live });

    let mut debug = opts.debug;
    let mut verify = false;
    let mut iter = 0u32;
    let mut total_sent = 0u64;
    let mut sent_last = size;
    let mut downtime_pages = 0u64;
    let mut passes: Vec<PassStats> = Vec::new();
    let mut batch: Vec<u64> = Vec::with_capacity(MAX_BATCH);
    let mut entries: Vec<PfnEntry> = Vec::with_capacity(MAX_BATCH);

    loop {
        iter += 1;
        let phase = match (last_iter, verify) {
            (false, _) => Phase::PreCopy,
            (true, false) => Phase::Final,
            (true, true) => Phase::Verify,
        };
        observer(&Event::PassStarted { iter, phase });
        let t0 = domain.now();
        let (mut sent, mut skipped, mut xtab, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        let mut n_scan = 0u64;
        while n_scan < size {
            if cancelled(opts) {
                return Err(SaveError::Cancelled);
            }
            if !last_iter {
                domain.log_dirty_peek(&mut to_skip)?;
            }
            batch.clear();
            while batch.len() < MAX_BATCH && n_scan < size {
                let n = plan.permute(n_scan);
                n_scan += 1;
                let send = to_send.test(n);
                let dirty = to_skip.test(n);
                if !last_iter && send && dirty {
                    skipped += 1;
                }
                if !(send && (!dirty || last_iter)) || plan.is_skipped(n) {
                    continue;
                }
                batch.push(n);
            }
            if batch.is_empty() {
                // A batch fills until 1024 entries or the end of the scan, so
                // an empty one means the scan is over (the seed's `goto skip`).
                break;
            }
            let (b, nx) = send_batch(domain, &mut writer, &batch, &mut entries, limiter.as_mut())?;
            bytes += b;
            sent += batch.len() as u64;
            xtab += nx as u64;
            observer(&Event::BatchWritten {
                iter,
                entries: batch.len(),
                xtab: nx,
                scanned: n_scan,
            });
        }
        total_sent += sent;
        let duration = domain.now().saturating_sub(t0);
        let mut stats = PassStats::sent(iter, phase, [sent, skipped, xtab, bytes], duration);
        if phase == Phase::Final {
            downtime_pages = sent;
        }

        if last_iter && debug {
            to_send.fill();
            debug = false;
            verify = true;
            writer.verify_marker()?;
            observer(&Event::PassEnded(&stats));
            passes.push(stats);
            continue;
        }
        if last_iter {
            observer(&Event::PassEnded(&stats));
            passes.push(stats);
            break;
        }

        // Pre-copy pass done: decide, then collect what was dirtied.
        let dirty_now = if policy.wants_dirty_count() {
            domain.log_dirty_peek(&mut scratch)?;
            Some(scratch.count())
        } else {
            None
        };
        let report = PassReport {
            iter,
            sent,
            skipped,
            total_sent,
            sent_last,
            pfn_array_size: size,
            bytes,
            duration,
            dirty_now,
        };
        stats.dirty_now = dirty_now;
        if let Decision::StopAndCopy(why) = policy.after_pass(&report) {
            stop = why;
            stats.stop = Some(why);
            last_iter = true;
            if policy.send_while_suspending() {
                // The decided pass ends here; the wait is a pass of its own
                // when the guest did not stop at once.
                observer(&Event::PassEnded(&stats));
                passes.push(stats);
                // `to_skip` has served its purpose: pre-copy is over.
                let mut wait = Suspending {
                    iter: iter + 1,
                    carry: &mut to_skip,
                    scratch: &mut scratch,
                    batch: &mut batch,
                    entries: &mut entries,
                };
                let (running_at, wait_stats) = wait.run(
                    domain,
                    undo,
                    opts,
                    &plan,
                    &mut writer,
                    &mut limiter,
                    observer,
                )?;
                suspend_at = Some(running_at);
                // The final round: what the last CLEAN reports plus what the
                // wait left dirty and unsent.
                let clean = domain.log_dirty_clean(&mut to_send)?;
                to_send.merge(&to_skip);
                domain.dm_take(qemu_active, &mut to_send, false)?;
                if let Some(mut w) = wait_stats {
                    iter += 1;
                    total_sent += w.sent;
                    w.dirtied = Some(clean.dirty_count);
                    observer(&Event::Suspended { iter });
                    observer(&Event::PassEnded(&w));
                    passes.push(w);
                } else {
                    observer(&Event::Suspended { iter });
                }
                continue;
            }
            suspend_and_state(domain, undo)?;
            suspend_at = Some(domain.now());
            observer(&Event::Suspended { iter });
        }
        let clean = domain.log_dirty_clean(&mut to_send)?;
        stats.dirtied = Some(clean.dirty_count);
        stats.dirty_pages_per_s =
            (!duration.is_zero()).then(|| clean.dirty_count as f64 / duration.as_secs_f64());
        if !last_iter {
            qemu_active = qemu_non_active;
            qemu_non_active = 1 - qemu_active;
            domain.dm_flip(qemu_active)?;
            domain.dm_take(qemu_non_active, &mut to_send, true)?;
        } else {
            domain.dm_take(qemu_active, &mut to_send, false)?;
        }
        sent_last = sent;
        observer(&Event::PassEnded(&stats));
        passes.push(stats);
    }

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
    let downtime = suspend_at.map_or(Duration::ZERO, |t| domain.now().saturating_sub(t));

    if matches!(opts.envelope, Envelope::Xend { .. }) {
        let qevm = domain.device_model_state()?;
        xend::write_tail(out, qevm.as_deref())?;
    }
    out.flush()?;

    let manifest = if opts.manifest {
        let workers = if opts.digest_workers == 0 {
            2
        } else {
            opts.digest_workers
        };
        let mut pages = opts.page_digests.then(Vec::new);
        let mem = digest_memory(domain, &plan, workers, pages.as_mut())?;
        let mut m = Manifest::new(plan.max_pfn, &mem, &contexts, &blob);
        if let Some(p) = &pages {
            m.set_page_digests(p);
        }
        Some(m)
    } else {
        None
    };

    if undo.log_dirty {
        if let Err(e) = domain.log_dirty_off() {
            observer(&Event::Warning(&format!("couldn't disable log-dirty: {e}")));
        }
        undo.log_dirty = false;
    }

    let summary = SaveSummary {
        policy: if live { policy.name() } else { "non-live" }.to_string(),
        live,
        passes: iter,
        total_sent,
        pfn_array_size: size,
        factor: total_sent as f64 / size as f64,
        downtime_pages,
        downtime_us: downtime.as_micros() as u64,
        stream_bytes,
        stop,
        vcpus: nr_vcpus,
    };
    observer(&Event::Done(&summary));
    Ok(SaveOutcome {
        summary,
        passes,
        manifest,
    })
}
