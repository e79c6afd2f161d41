//! Process-wide settings, which the crate never changes on its own: each is a function a program that embeds calls
//! once, at its start (the examples and the embed tool do).

/// Asks glibc's malloc to keep freed memory for reuse instead of handing it back to the OS: allocations up to 1 GiB
/// come from its heaps, a heap's free top is kept, and every thread started afterwards allocates from the main
/// arena (`mallopt` of `M_MMAP_THRESHOLD`, `M_TRIM_THRESHOLD` and `M_ARENA_MAX`, or the `GLIBC_TUNABLES`
/// `glibc.malloc.mmap_threshold` / `trim_threshold` / `arena_max` settings).
///
/// Each layer's output is a fresh buffer; without this, every large one is a new mapping whose pages are faulted
/// in and zeroed on first write. On a 2-vCPU Xeon (AVX-512/AMX, Linux 6.18 guest) the f32 vision tower at batch 8
/// took 0.71 M page faults per batch, and 10–11 s with them against 7.8–8.7 s with this set; peak RSS is unchanged
/// (3.66 → 3.63 GB), but the process keeps its peak instead of shrinking between batches. The one arena matters
/// because CPU forwards run on rayon's workers: a worker's own arena lives in heaps of at most 64 MiB, which glibc
/// unmaps whenever one is wholly free, so without it batch 8 still took 0.58 M faults per batch (AMD EPYC Zen 3,
/// 2 vCPU). Call it in a process that embeds, first thing, before loading and before any thread starts; a process
/// with other large, short-lived allocations, or many threads that allocate at once, may prefer without.
///
/// Returns whether malloc took all three settings: `false` off glibc (musl, macOS, Windows), where nothing changes.
pub fn retain_freed_memory() -> bool {
    crate::kernels::cpu::retain_freed_memory()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_the_settings_and_elsewhere_nothing_changes() {
        assert_eq!(
            retain_freed_memory(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
