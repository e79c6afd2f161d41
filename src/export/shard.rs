//! Splitting one input list between N independent jobs (`--shard I/N`): each job sorts the same list and takes its
//! own contiguous slice, so the N outputs together hold every input exactly once, whatever machine runs which shard.

use std::ffi::OsStr;
use std::ops::Range;

use crate::error::{Error, Result};

/// The `index`-th of `count` contiguous slices of a sorted input list (`0 <= index < count`); `0/1` is everything.
///
/// Shard `I/N` of `len` inputs is `[len*I/N, len*(I+1)/N)`: the slices tile the list, differ in length by at most
/// one, and depend only on the list, so the same inputs always land in the same shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Default for Shard {
    /// `0/1`: the whole list.
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl Shard {
    /// Shard `index` of `count`; a `count` of 0 or an `index` not below `count` is [`Error::InvalidArgument`].
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(Error::invalid_argument("shard", "count must be at least 1 (e.g. 0/4)"));
        }
        if index >= count {
            return Err(Error::invalid_argument(
                "shard",
                format!(
                    "index {index} must be below the count {count} (shards are 0/{count} to {}/{count})",
                    count - 1
                ),
            ));
        }
        Ok(Self { index, count })
    }

    /// Which slice, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many slices.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The positions of this shard in a list of `len` inputs: `[len*index/count, len*(index+1)/count)`.
    pub fn range(&self, len: usize) -> Range<usize> {
        // u128: `len * count` cannot overflow, and the bounds are at most `len`.
        let bound = |i: usize| (len as u128 * i as u128 / self.count as u128) as usize;
        bound(self.index)..bound(self.index + 1)
    }

    /// Sorts `items` by the bytes of their strings (for UTF-8, the order of Python's `sorted()` over `str`) and
    /// keeps this shard's slice, in that order. Paths and texts alike: `PathBuf`, `String`, `&str`, ...
    pub fn take<T: AsRef<OsStr>>(&self, mut items: Vec<T>) -> Vec<T> {
        items.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
        let range = self.range(items.len());
        items.truncate(range.end);
        items.drain(..range.start);
        items
    }
}

impl std::fmt::Display for Shard {
    /// `I/N`, as [`Shard::from_str`](std::str::FromStr::from_str) reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;

    /// `I/N`, e.g. `0/4` … `3/4`; each part that is not a number is an error naming it (`index` or `count`).
    fn from_str(s: &str) -> Result<Self> {
        let (index, count) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| Error::invalid_argument("shard", format!("{s:?}: expected I/N, e.g. 0/4")))?;
        let number = |what: &str, part: &str| {
            part.trim().parse::<usize>().map_err(|_| {
                Error::invalid_argument(
                    "shard",
                    format!("{s:?}: the {what} {part:?} is not a non-negative integer (expected I/N, e.g. 0/4)"),
                )
            })
        };
        Self::new(number("index", index)?, number("count", count)?)
    }
}
