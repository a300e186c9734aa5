//! `hvm-inspect plot`: pictures of a save, as SVG.
//!
//! * [`image`]: from an image — pages sent per pass (the final round and the
//!   verify pass told apart) over a memory map of which pfns each pass sent,
//!   so the hot set shows as the rows later passes keep resending.
//! * [`stats`]: from `hvm-save --stats` — per pass, pages sent, dirty and
//!   send rates, the throttle, and where and why pre-copy stopped.
//!
//! Drawing is plotters' SVG backend alone: text becomes `<text>` elements
//! sized by plotters' estimate, so no font file or C library is involved.
//! An SVG is built in memory (its size is bounded: see
//! [`image::MAX_ROWS`], [`image::MAX_COLUMNS`]) and written by the caller
//! through `hvm_cli::output`.

pub mod draw;
pub mod image;
pub mod stats;

pub use stats::StatsError;

/// A failure of plotters while drawing into the in-memory SVG. Writing to a
/// `String` cannot fail, so this means a plotters bug or a degenerate range.
#[derive(Debug, thiserror::Error)]
#[error("drawing the plot: {0}")]
pub struct DrawError(pub String);

impl<E: std::error::Error + Send + Sync> From<plotters::drawing::DrawingAreaErrorKind<E>>
    for DrawError
{
    fn from(e: plotters::drawing::DrawingAreaErrorKind<E>) -> Self {
        DrawError(e.to_string())
    }
}

impl From<StatsError> for crate::InspectError {
    fn from(e: StatsError) -> Self {
        match e {
            StatsError::Io { path, source } => crate::InspectError::Io { path, source },
            other => crate::InspectError::BadInput(other.to_string()),
        }
    }
}

impl From<DrawError> for crate::InspectError {
    fn from(e: DrawError) -> Self {
        crate::InspectError::Write(std::io::Error::other(e.to_string()))
    }
}

/// Write a finished SVG to `dest` (opened with
/// [`crate::convert::Destination::open`], so the output was checked against
/// the input before the walk): a file is committed atomically, and only now.
pub fn write(dest: crate::convert::Destination, svg: &str) -> Result<(), crate::InspectError> {
    use std::io::Write;
    match dest {
        crate::convert::Destination::File(mut f) => {
            f.write_all(svg.as_bytes())
                .map_err(crate::InspectError::Write)?;
            f.commit()?;
        }
        crate::convert::Destination::Stdout(_) => {
            hvm_cli::stdout::write(svg.as_bytes()).map_err(|f| {
                crate::InspectError::Write(std::io::Error::new(f.0.kind(), f.to_string()))
            })?;
        }
    }
    Ok(())
}
