//! The audio thread's calls (`push_control`, `pop`, `wait_for`, `status`) never allocate:
//! a counting global allocator counts the allocations made on this test's thread between them.
//! Its own test binary, so that no other test's allocations are counted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::host::*;
use common::*;
use engine::MusicGen;
use engine::stream::{Clock, ControlFrame, EngineConfig, GenerationSettings};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn the_audio_side_never_allocates() {
    let model = Arc::new(MusicGen::load(&model_dir("musicgen-tiny"), &device()).unwrap());
    let config = EngineConfig {
        sample_rate: 48_000,
        clock: Clock::Timeline,
        window: 64,
        reprompt_frames: 16,
        ..EngineConfig::default()
    };
    let settings = GenerationSettings::default();
    let (_handle, mut endpoint) = start(&model, config, "drums", settings, None);
    latency(&endpoint);
    let mut block = [0.0f32; 480];
    let (mut t, mut next) = (0u64, 0u64);
    COUNTING.with(|c| c.set(true));
    for _ in 0..40 {
        while next < 30 && (next * 48_000).div_ceil(50) < t + 480 {
            endpoint.push_control(ControlFrame::silent(next));
            next += 1;
        }
        endpoint.wait_for(480, WAIT);
        endpoint.pop(&mut block);
        let _ = endpoint.status();
        t += 480;
    }
    // Underrun path too: more than there is.
    let mut big = [0.0f32; 8192];
    endpoint.pop(&mut big);
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0);
    assert!(endpoint.status().steps_done > 0);
}
