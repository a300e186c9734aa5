//! # hvm-save
//!
//! The live save producer: makes seed-dialect Xen HVM save images
//! (`xc_hvm_save` @ `e2a44bc7a4`) from a running guest, faster and with
//! less downtime than the seed, or with exactly its decisions.
//!
//! The API in layers, from the hypervisor up:
//!
//! * [`domain`]: the [`Domain`] trait, the hypervisor
//!   boundary (log-dirty, device-model bitmaps, batch mapping, suspend,
//!   vCPU and HVM state, a clock).
//! * [`backend`]: implementations: [`backend::sim`] (deterministic simulated
//!   guest), `backend::kvm` (the embedded real guest on Linux),
//!   [`backend::xen`] (feature `xen`) and [`backend::fault`] (fault injection).
//! * [`plan`]: `max_pfn`, holes, magic pfns, the permute scan order.
//! * [`policy`]: when to stop pre-copy: [`policy::SeedPolicy`] (the seed's
//!   rules) and [`policy::DowntimePolicy`] (the default, which may also
//!   throttle a guest that out-writes the link), plus the rate limiter.
//! * [`saver`]: the seed's loop, emitting [`saver::Event`]s.
//! * [`sink`]: atomic file, stdout, TCP. [`xend`]: the xend envelope.
//! * [`manifest`]: digests of the guest at suspend time. [`progress`]:
//!   progress display, stats file, summary line.

#![warn(missing_docs)]

pub mod backend;
pub mod domain;
pub mod manifest;
pub mod plan;
pub mod policy;
pub mod progress;
pub mod saver;
pub mod sink;
pub mod xend;

pub use domain::{Domain, DomainError};
pub use plan::Plan;
pub use policy::{DowntimePolicy, Policy, SeedPolicy};
pub use saver::{save, Envelope, Event, SaveError, SaveOptions, SaveOutcome, SaveSummary};
