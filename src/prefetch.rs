//! The decode/compute pipeline: a producer thread prepares batch k+1 (decode and preprocess, in parallel on
//! rayon's pool) while the caller's thread runs batch k (the model, on whatever device), so a fast device is not
//! left waiting for the CPU. Used by [`crate::AltClip`]'s image batch API and by [`crate::export`]; [`run`] is
//! public for other stages (a custom device, a stand-in in benchmarks).

use std::sync::mpsc;

use crate::error::{Error, Result};

/// How the image batch API cuts its inputs into forward passes and how far decoding runs ahead of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagePipeline {
    /// Images per forward pass; memory is bounded by this, not by the number of inputs. Default 16.
    pub batch_size: usize,
    /// Batches prepared ahead of the one the model runs: at most `depth + 1` prepared batches are alive. 0 runs
    /// decode and model one after the other on the caller's thread. Default 2.
    pub depth: usize,
}

impl Default for ImagePipeline {
    fn default() -> Self {
        Self {
            batch_size: 16,
            depth: 2,
        }
    }
}

impl ImagePipeline {
    /// The deepest pipeline accepted: the channel's slots are allocated up front.
    pub const MAX_DEPTH: usize = 1024;

    /// Rejects a batch size of 0 and a depth over [`Self::MAX_DEPTH`].
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::invalid_argument(
                "batch_size",
                "the batch size must be at least 1",
            ));
        }
        if self.depth > Self::MAX_DEPTH {
            return Err(Error::invalid_argument(
                "depth",
                format!("{} batches ahead is over the limit of {}", self.depth, Self::MAX_DEPTH),
            ));
        }
        Ok(())
    }
}

/// Runs `consume(prepare(b))` for every batch `b` in order, with `prepare` on a producer thread up to `depth`
/// batches ahead of `consume` on the caller's thread (a bounded channel). The first error from `consume` stops
/// the producer and is returned; a panic in `prepare` is resumed here.
///
/// With `depth` 0, or when called from a rayon worker (the producer's parallel work could then wait for
/// workers that all block here), the two stages alternate on the caller's thread: the same results, unpipelined.
pub fn run<I, T, P, C>(batches: I, depth: usize, mut prepare: P, mut consume: C) -> Result<()>
where
    I: IntoIterator,
    I::IntoIter: Send,
    T: Send,
    P: FnMut(I::Item) -> T + Send,
    C: FnMut(T) -> Result<()>,
{
    if depth == 0 || rayon::current_thread_index().is_some() {
        return batches.into_iter().try_for_each(|b| consume(prepare(b)));
    }
    let batches = batches.into_iter();
    // More slots than batches buy nothing (and the channel allocates them up front).
    let depth = batches.size_hint().1.map_or(depth, |n| depth.min(n.max(1)));
    // The producer holds one prepared batch while it waits to send; the channel holds the other depth − 1.
    let (tx, rx) = mpsc::sync_channel(depth - 1);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            for b in batches {
                if tx.send(prepare(b)).is_err() {
                    break; // The consumer stopped.
                }
            }
        });
        let result = rx.iter().try_for_each(&mut consume);
        drop(rx); // Unblocks a producer waiting to send after an error.
        if let Err(payload) = producer.join() {
            std::panic::resume_unwind(payload);
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_and_an_error_stops_the_producer() {
        for depth in 0..4 {
            let mut seen = Vec::new();
            run(
                0..50,
                depth,
                |b| b * 2,
                |x| {
                    seen.push(x);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(seen, (0..50).map(|b| b * 2).collect::<Vec<_>>());
            let mut prepared = std::sync::atomic::AtomicUsize::new(0);
            let counter = &prepared;
            let err = run(
                0..1000,
                depth,
                |b| {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    b
                },
                |x| match x {
                    3 => Err(Error::bad_input("images", "stop")),
                    _ => Ok(()),
                },
            );
            assert!(matches!(err, Err(Error::BadInput { .. })));
            // Batches 0..=3 consumed, at most depth + 1 prepared ahead of the failing one.
            assert!(*prepared.get_mut() <= 4 + depth + 1, "{depth}: {}", prepared.get_mut());
        }
    }
}
