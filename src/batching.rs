//! Padding-aware text batching: which texts share a forward pass.
//!
//! Padding a list of captions to its longest one wastes most of the work on real data (COCO-style captions: a
//! median of 14 tokens, a tail past 30). Sorting by length and cutting the sorted list into groups, each padded
//! only to its own longest text, removes most of that waste; but every forward pass also costs something of its
//! own (reading all the weights once, thread start-up, small GEMMs), so one group per length is not best either.
//! [`TextBatching::plan`] picks the cut that minimises
//! `Σ over groups (texts × longest + overhead_tokens)` exactly, by dynamic programming over the sorted lengths.
//!
//! Results are the same as padding to the longest up to float rounding: padded keys get exactly zero attention
//! weight, and the CLS token does not see padding (max |Δ| 4.9e-6 on the full-size model, from GEMM blocking).

use crate::error::{Error, Result};

/// How texts of different lengths are grouped into forward passes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextBatching {
    /// The fixed cost of one forward pass, in padded tokens' worth of work. 0 puts each distinct length in its
    /// own pass; a huge value pads everything to the longest (as long as the limits below allow).
    pub overhead_tokens: usize,
    /// At most this many padded tokens (texts × longest) in one pass, bounding activation memory. A single
    /// text longer than this still gets its own pass.
    pub max_tokens: usize,
    /// At most this many texts in one pass.
    pub max_texts: usize,
}

impl Default for TextBatching {
    /// 64 tokens of overhead per pass (measured on 2 CPU cores: XLM-R large costs about the same per token from
    /// 77 to 512 tokens per pass, plus a few tens of tokens' worth per pass), 8192 padded tokens and 256 texts
    /// at most per pass.
    fn default() -> Self {
        Self {
            overhead_tokens: 64,
            max_tokens: 8192,
            max_texts: 256,
        }
    }
}

impl TextBatching {
    /// The defaults for the device the text tower runs on: [`TextBatching::default`] on the CPU; on a GPU
    /// (CUDA, Metal) 256 tokens of overhead per pass, 32768 padded tokens and 1024 texts at most per pass.
    ///
    /// A GPU pays a fixed launch cost per pass (24 layers of about a dozen kernels) that is worth far more tokens
    /// than a CPU's, and has the memory for bigger passes: fewer, larger groups. These GPU numbers are reasoned,
    /// not yet measured on one; [`AltClip::with_text_batching`](crate::AltClip::with_text_batching) overrides them.
    pub fn for_device(device: &candle_core::Device) -> Self {
        if device.is_cpu() {
            Self::default()
        } else {
            Self::GPU
        }
    }

    const GPU: Self = Self {
        overhead_tokens: 256,
        max_tokens: 32768,
        max_texts: 1024,
    };

    /// One pass per `max_texts` texts in input order, each padded to its longest: what padding to the longest
    /// does, for comparisons.
    pub fn pad_to_longest(max_texts: usize) -> Self {
        Self {
            overhead_tokens: usize::MAX / 4,
            max_tokens: usize::MAX,
            max_texts,
        }
    }

    /// Groups the texts of the given `lengths` (tokens, specials included) into passes: each group lists input
    /// indices, shortest first; groups come shortest first and together cover every index once.
    pub fn plan(&self, lengths: &[usize]) -> Result<Vec<Vec<usize>>> {
        if self.max_texts == 0 || self.max_tokens == 0 {
            return Err(Error::invalid_argument(
                "text_batching",
                format!(
                    "max_texts ({}) and max_tokens ({}) must be at least 1",
                    self.max_texts, self.max_tokens
                ),
            ));
        }
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        // Stable, so equal lengths keep input order.
        order.sort_by_key(|&i| lengths[i]);
        let sorted: Vec<u128> = order.iter().map(|&i| lengths[i] as u128).collect();
        let n = sorted.len();
        // best[j]: the cheapest cost of the first j sorted texts; cut[j]: where its last group starts.
        let mut best = vec![u128::MAX; n + 1];
        let mut cut = vec![0usize; n + 1];
        best[0] = 0;
        for j in 1..=n {
            let longest = sorted[j - 1];
            for i in (j.saturating_sub(self.max_texts)..j).rev() {
                let padded = (j - i) as u128 * longest;
                if padded > self.max_tokens as u128 && j - i > 1 {
                    break; // Longer groups ending at j only get bigger.
                }
                let cost = best[i].saturating_add(padded + self.overhead_tokens as u128);
                // `<=`: on a tie the larger group (fewer passes) wins.
                if cost <= best[j] {
                    best[j] = cost;
                    cut[j] = i;
                }
            }
        }
        let mut groups = Vec::new();
        let mut j = n;
        while j > 0 {
            let i = cut[j];
            groups.push(order[i..j].to_vec());
            j = i;
        }
        groups.reverse();
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(b: &TextBatching, lengths: &[usize], groups: &[Vec<usize>]) -> usize {
        groups
            .iter()
            .map(|g| g.len() * g.iter().map(|&i| lengths[i]).max().unwrap() + b.overhead_tokens)
            .sum()
    }

    fn covers_once(groups: &[Vec<usize>], n: usize) -> bool {
        let mut seen: Vec<usize> = groups.concat();
        seen.sort();
        seen == (0..n).collect::<Vec<_>>()
    }

    #[test]
    fn equal_lengths_share_one_pass_in_input_order() {
        let groups = TextBatching::default().plan(&[5, 5, 5, 5]).unwrap();
        assert_eq!(groups, vec![vec![0, 1, 2, 3]]);
    }

    #[test]
    fn short_and_long_texts_are_split_when_padding_costs_more_than_a_pass() {
        // Padding all to 77: 4 × 77 = 308 + 64. Split: 3 × 7 + 64 + 77 + 64 = 226.
        let b = TextBatching::default();
        let lengths = [7, 77, 6, 7];
        let groups = b.plan(&lengths).unwrap();
        assert_eq!(groups, vec![vec![2, 0, 3], vec![1]]);
        assert_eq!(cost(&b, &lengths, &groups), 226);
    }

    #[test]
    fn a_large_overhead_pads_everything_together() {
        let b = TextBatching::pad_to_longest(256);
        let groups = b.plan(&[7, 77, 6, 7]).unwrap();
        assert_eq!(groups, vec![vec![2, 0, 3, 1]]);
    }

    #[test]
    fn zero_overhead_gives_one_pass_per_length() {
        let b = TextBatching {
            overhead_tokens: 0,
            ..TextBatching::default()
        };
        let groups = b.plan(&[3, 9, 3, 4, 9]).unwrap();
        assert_eq!(groups, vec![vec![0, 2], vec![3], vec![1, 4]]);
    }

    #[test]
    fn limits_bound_every_pass() {
        let b = TextBatching {
            overhead_tokens: 1_000_000,
            max_tokens: 40,
            max_texts: 3,
        };
        let lengths = [10, 10, 10, 10, 10, 10, 10, 50];
        let groups = b.plan(&lengths).unwrap();
        assert!(covers_once(&groups, lengths.len()));
        for g in &groups {
            assert!(g.len() <= 3);
            let padded = g.len() * g.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(padded <= 40 || g.len() == 1, "{g:?}");
        }
        // 7 texts of 10 need ceil(7/3) = 3 passes; the 50-token text is alone.
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[3], vec![7]);
    }

    #[test]
    fn the_plan_is_optimal_against_brute_force() {
        // Every contiguous split of the sorted lengths (2^(n-1) of them) for a few small lists.
        let b = TextBatching {
            overhead_tokens: 20,
            max_tokens: 10_000,
            max_texts: 10_000,
        };
        let lists: [&[usize]; 4] = [
            &[7, 12, 14, 15, 31, 8, 9, 40],
            &[3, 3, 50, 2],
            &[1],
            &[16, 16, 17, 90, 91, 9],
        ];
        for lengths in lists {
            let groups = b.plan(lengths).unwrap();
            assert!(covers_once(&groups, lengths.len()));
            let mut sorted = lengths.to_vec();
            sorted.sort();
            let n = sorted.len();
            let brute = (0..1u32 << (n - 1))
                .map(|mask| {
                    let (mut total, mut start) = (0, 0);
                    for end in 1..=n {
                        if end == n || mask & (1 << (end - 1)) != 0 {
                            total += (end - start) * sorted[end - 1] + b.overhead_tokens;
                            start = end;
                        }
                    }
                    total
                })
                .min()
                .unwrap();
            assert_eq!(cost(&b, lengths, &groups), brute, "{lengths:?}");
        }
    }

    #[test]
    fn the_cpu_keeps_the_measured_defaults_and_a_gpu_gets_bigger_passes() {
        assert_eq!(
            TextBatching::for_device(&candle_core::Device::Cpu),
            TextBatching::default()
        );
        // 40 captions of 10..=49 tokens: the CPU's 64-token overhead cuts them into several passes.
        let lengths: Vec<usize> = (10..50).collect();
        let cpu = TextBatching::default().plan(&lengths).unwrap().len();
        let gpu = TextBatching::GPU.plan(&lengths).unwrap().len();
        assert!(gpu < cpu && cpu > 1, "gpu {gpu} passes vs cpu {cpu}");
    }

    #[test]
    fn empty_input_and_bad_limits() {
        assert!(TextBatching::default().plan(&[]).unwrap().is_empty());
        let bad = TextBatching {
            max_texts: 0,
            ..TextBatching::default()
        };
        assert!(matches!(
            bad.plan(&[1]),
            Err(Error::InvalidArgument {
                argument: "text_batching",
                ..
            })
        ));
    }
}
