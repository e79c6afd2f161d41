//! Buffers for weights read from files: zeroed, and on Linux backed by transparent huge pages where the kernel
//! offers them; and glibc's malloc told to keep freed memory ([`crate::process::retain_freed_memory`]).

/// Huge pages are 2 MiB on x86-64 and on most aarch64 kernels; a smaller buffer gains nothing.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const HUGE_PAGE: usize = 2 << 20;

/// A zeroed buffer of `n` values for weights about to be read from a file. On Linux its 2 MiB-aligned interior is
/// advised to be backed by transparent huge pages (`madvise(MADV_HUGEPAGE)`), so that the first write faults it in
/// 2 MiB at a time instead of 4 KiB: loading a BAAI/AltCLIP-size f32 checkpoint (3.5 GB, 850 000 small pages)
/// went from 1.3–1.5 s to 0.8–0.9 s on a 2-core Zen 3 (see BENCHMARKS.md). Where the kernel's THP mode is `never`,
/// or off Linux, a plain buffer.
pub(crate) fn weight_buffer<T: bytemuck::Zeroable>(n: usize) -> Vec<T> {
    // `alloc_zeroed`: a large one is fresh memory from mmap, so no page is touched before the advice (`vec![x; n]`
    // writes every element of a type std does not know to be all-zero bytes, such as `half::f16`).
    let values: Vec<T> = bytemuck::zeroed_vec(n);
    advise_huge_pages(&values);
    values
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(values: &[T]) {
    let (start, len) = (values.as_ptr() as usize, std::mem::size_of_val(values));
    let first = start.next_multiple_of(HUGE_PAGE);
    let end = (start + len) / HUGE_PAGE * HUGE_PAGE;
    if end <= first {
        return;
    }
    // SAFETY: [first, end) lies inside the live allocation just made (rounded inwards to page boundaries, as
    // madvise requires); MADV_HUGEPAGE changes how its pages are backed, never their contents or validity. The
    // result is ignored on purpose: EINVAL where THP is compiled out means small pages, which is correct too.
    let _ = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages<T>(_: &[T]) {}

/// Below this size an allocation comes from malloc's heap, whose freed memory is reused, not from a fresh `mmap`
/// whose pages the kernel faults in and zeroes again on every use. glibc's own threshold grows only to 32 MiB, less
/// than one batch-8 vision activation (2056 × 4096 f32 = 33.7 MB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 30;
/// Free memory at a heap's top that malloc keeps instead of returning it to the OS (the largest `mallopt` takes).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;

/// One arena, the main one, for every thread created after the setting: a thread's own arena lives in heaps of at
/// most 64 MiB, and glibc unmaps such a heap once all of it is free, whatever the trim threshold; so a forward run
/// on a rayon worker ([`crate::tower`]) faulted its large outputs in again on every call.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: libc::c_int = 1;

/// [`crate::process::retain_freed_memory`]: whether glibc's malloc took all three settings (`false` off glibc).
pub(crate) fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let settings = [
            (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (libc::M_ARENA_MAX, ARENA_MAX),
        ];
        let mut took = true;
        for (param, value) in settings {
            // SAFETY: mallopt takes two integers and only changes the values malloc consults on later calls; it
            // returns 1 on success, 0 for a value it rejects.
            took &= unsafe { libc::mallopt(param, value) } == 1;
        }
        took
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_and_sized_whatever_the_advice() {
        for n in [0, 1, 1000, HUGE_PAGE / 4 + 3, 3 * HUGE_PAGE / 4] {
            let v: Vec<f32> = weight_buffer(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x == 0.0));
        }
        let h: Vec<half::f16> = weight_buffer(HUGE_PAGE);
        assert!(h.iter().all(|x| x.to_bits() == 0));
    }
}
