//! The one batching helper every method shares (after Captum's `_batch_attribution`): it cuts
//! a pack's signals into chunks whose (member x signal x sample) rows fit `max_batch`, runs the
//! method on each chunk and concatenates along the signal axis.

use super::Output;
use anyhow::Result;

/// Signals per chunk so that members x signals x rows_per_pair <= max_batch (at least one).
pub fn chunk_signals(max_batch: usize, members: usize, rows_per_pair: usize) -> usize {
    (max_batch / (members * rows_per_pair).max(1)).max(1)
}

/// Runs `attribute(start, len)` on consecutive chunks of `signals` and concatenates the
/// outputs along the signal axis.
pub fn batched(
    signals: i64,
    signals_per_chunk: usize,
    mut attribute: impl FnMut(i64, i64) -> Result<Output>,
) -> Result<Output> {
    let mut outputs = Vec::new();
    let per = i64::try_from(signals_per_chunk).unwrap_or(i64::MAX);
    for start in (0..signals).step_by(signals_per_chunk) {
        let len = per.min(signals - start);
        outputs.push(attribute(start, len)?);
    }
    Ok(Output::concat(outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_the_budget_and_never_vanish() {
        assert_eq!(chunk_signals(1000, 10, 10), 10);
        assert_eq!(chunk_signals(1000, 10, 1), 100);
        assert_eq!(chunk_signals(5, 10, 10), 1);
    }
}
