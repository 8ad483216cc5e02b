//! Process memory for jobs whose footprint is bounded: freed memory kept for reuse, and memory
//! touched before traffic so the first messages do not pay its page faults (as the JVM's
//! `-XX:+AlwaysPreTouch`).

/// mimalloc's `purge_delay` option: its position in `mi_option_e` of mimalloc v3's `mimalloc.h`
/// (libmimalloc-sys 0.1.49 names only the options before it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory the process frees for reuse instead of handing it back to the OS after a delay.
///
/// A batch job frees a chunk's buffers and allocates the next chunk's moments later, often on
/// another thread; with mimalloc's default the pages went back to the OS in between and came
/// back as fresh (zeroed, huge) page faults: 165,000–194,000 faults and ~10 % of the CPU time on
/// 2 M rows, against 1,200 with purging off (`perf stat -e page-faults,task-clock`). The Kafka
/// stream is the same shape (its messages in flight are bounded); there a purge between two
/// bursts made later seconds as slow as the first (docs/benchmarks.md). Such a job's memory is
/// bounded by its queues, so the peak is what it keeps.
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option; mimalloc reads options atomically and accepts a change
    // at any time (it only decides when later frees are purged).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Allocates `mib` MiB, writes every page and frees it again, on the calling thread: with
/// [`keep_freed_memory`] the allocator keeps those pages resident, and later allocations (on any
/// thread) reuse them instead of faulting fresh ones in.
///
/// Without it a `pixguard stream` that starts taking 64,000 messages/s spent ~30 % of its first
/// quarter second in page faults (`perf record`: mimalloc extending fresh pages) and that
/// second's messages waited up to ~100 ms (docs/benchmarks.md).
pub fn pretouch(mib: usize) {
    // Blocks well above mimalloc's small-object sizes come straight from its arenas, whose
    // memory any thread's pages are later cut from.
    const BLOCK: usize = 256 * 1024;
    let blocks: Vec<Vec<u8>> = (0..mib * (1024 * 1024 / BLOCK))
        // Not zeroes: a zeroed allocation of fresh OS memory may be handed out untouched.
        .map(|_| vec![1u8; BLOCK])
        .collect();
    std::hint::black_box(&blocks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc v3's default purge_delay is 1000 ms; its neighbours in the enum default to 1
        // and 0, so a shifted index reads another value. Nothing in this test binary sets it.
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        // SAFETY: reads one option.
        let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(value, expected);
    }
}
