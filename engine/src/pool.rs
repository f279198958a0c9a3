//! How a decode step uses rayon's threads.
//!
//! A step forks ~200 times (its matrix products, attentions and LM heads), each fork a few
//! tens of microseconds of work. Between two forks a worker of rayon's pool with nothing to do
//! goes to sleep after a few dozen idle rounds, and waking it again costs more than the fork
//! it is woken for (on a virtual machine an idle core halts and is woken by an interrupt:
//! 20–50 µs). [`step`] runs a host step on one of the pool's threads and keeps the others awake
//! until it returns: each spins on rayon's [`rayon::yield_now`], running whatever the step
//! forks the moment it is forked, and hands its core to other runnable threads (the host's
//! own, in a plugin) every few spins. A step whose work is a GPU's keeps rayon's idling: its
//! CPU threads would spin for nothing. EnCodec's one-shot decode on the CPU runs the same way
//! (its LSTM forks two products a frame).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Spins between two of the spinners' `sched_yield`s.
const SPINS_PER_YIELD: u32 = 64;

thread_local! {
    /// Set on the thread running a [`step`] whose spinners are out: a step inside it (a
    /// generation's step inside the stream worker's) runs in place, with the same spinners.
    static AWAKE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on one of rayon's threads (in place when called from one), where the joins of the
/// jobs it forks wait by working. With `keep_awake`, every other thread of the pool runs those
/// jobs as soon as they are forked, instead of sleeping between them, and goes back to rayon's
/// own idling when `f` returns or unwinds.
pub fn step<R: Send>(keep_awake: bool, f: impl FnOnce() -> R + Send) -> R {
    if AWAKE.get() {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        let runner = rayon::current_thread_index();
        let spinners = if keep_awake {
            rayon::current_num_threads() - 1
        } else {
            0
        };
        for _ in 0..spinners {
            let done = &done;
            scope.spawn(move |_| {
                // The runner pops a spinner it finds in its own queue while it waits in a
                // join: spinning there would wait for itself.
                if rayon::current_thread_index() == runner {
                    return;
                }
                let mut idle = 0u32;
                while !done.load(Ordering::Acquire) {
                    match rayon::yield_now() {
                        Some(rayon::Yield::Executed) => idle = 0,
                        _ => {
                            idle = idle.wrapping_add(1);
                            if idle.is_multiple_of(SPINS_PER_YIELD) {
                                std::thread::yield_now();
                            } else {
                                std::hint::spin_loop();
                            }
                        }
                    }
                }
            });
        }
        // Set on return and on unwinding alike: a panicking step must not leave the spinners
        // (and so the scope) waiting for ever.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                AWAKE.set(false);
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(&done);
        AWAKE.set(spinners > 0);
        f()
    })
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use rayon::prelude::*;

    use super::step;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
    }

    #[test]
    fn a_step_runs_on_the_pool_and_returns_what_its_forks_computed() {
        for threads in [1, 2, 4] {
            for keep_awake in [false, true] {
                let (on_pool, sum) = pool(threads).install(|| {
                    step(keep_awake, || {
                        let on_pool = rayon::current_thread_index().is_some();
                        let sum: u64 = (0..10_000u64)
                            .into_par_iter()
                            .map(|i| (0..4u64).into_par_iter().map(|j| i * j).sum::<u64>())
                            .sum();
                        (on_pool, sum)
                    })
                });
                assert!(on_pool, "{threads} threads, keep_awake {keep_awake}");
                assert_eq!(sum, 6 * 10_000 * 9_999 / 2);
            }
        }
        // From outside any pool: on the global pool's threads.
        assert!(step(true, || rayon::current_thread_index().is_some()));
        // A step inside a step runs in place, where the outer one runs.
        let (outer, inner) = pool(2).install(|| {
            step(true, || {
                let outer = rayon::current_thread_index();
                (outer, step(true, rayon::current_thread_index))
            })
        });
        assert_eq!(inner, outer);
    }

    #[test]
    fn a_panicking_step_reaches_the_caller_and_releases_the_spinners() {
        let pool = pool(3);
        for _ in 0..3 {
            let caught = catch_unwind(AssertUnwindSafe(|| {
                pool.install(|| {
                    step(true, || {
                        (0..64)
                            .into_par_iter()
                            .for_each(|i| assert!(i < 63, "job {i} failed"));
                    })
                })
            }));
            let message = caught.expect_err("the step's panic");
            let message = message
                .downcast_ref::<String>()
                .map(String::as_str)
                .unwrap_or_default();
            assert_eq!(message, "job 63 failed");
            // The spinners stopped: the pool runs the next step.
            assert_eq!(pool.install(|| step(true, || 7)), 7);
        }
    }
}
