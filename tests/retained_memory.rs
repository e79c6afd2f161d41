//! `altclip::process::retain_freed_memory` in a process of its own (malloc's settings are process-wide): a large
//! buffer freed on a thread started after the call is reused, not faulted in again.

/// Minor page faults of the calling thread so far (`/proc/thread-self/stat`, field 10).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    after_name
        .split(' ')
        .nth(7)
        .expect("field 10")
        .parse()
        .expect("a count")
}

/// As a forward on a rayon worker allocates: one large buffer kept while another is allocated, written and freed,
/// twice. Without the single arena the second buffer lived in a second heap of the thread's own arena, which glibc
/// unmapped on each free (whatever the trim threshold), so the second round faulted its 10 240 pages in again.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_thread_started_after_it_reuses_a_freed_large_buffer() {
    const BYTES: usize = 40 << 20;
    assert!(altclip::process::retain_freed_memory());
    let faults = std::thread::spawn(|| {
        let kept = vec![1u8; BYTES];
        let round = || {
            std::hint::black_box(vec![2u8; BYTES])
                .iter()
                .map(|&b| u64::from(b))
                .sum::<u64>()
        };
        assert_eq!(round(), 2 * BYTES as u64);
        let before = minor_faults();
        assert_eq!(round(), 2 * BYTES as u64);
        let faults = minor_faults() - before;
        drop(std::hint::black_box(kept));
        faults
    })
    .join()
    .expect("the thread");
    // A 40 MiB buffer is 10 240 pages of 4 KiB; reused, it faults in none of them.
    assert!(
        faults < 1000,
        "{faults} page faults reusing a freed {BYTES}-byte buffer"
    );
}
