//! A machine slower than real time, through the built plugin: `MUSICRFM_SIMULATE_STEP_MS`
//! makes every decoder step take at least 40 ms (half of real time) on the tiny model. Against
//! bounces of the same settings from an instance at full speed:
//! - an offline bounce waits for the slow engine: no gap, bit-identical;
//! - a realtime replay of that unchanged section runs no decoder step (counted through the
//!   plugin's engine report), does not underrun and is bit-identical;
//! - a realtime run of new automation underruns, counts it, and what plays is where it
//!   belongs (every sample is the bounce's or silence);
//! - with the transport stopped the engine pre-generates from where playing will start, and
//!   playing from there in real time is instant and bit-identical.
//!
//! One test: the variable is read by every instance the process activates.

mod support;

use support::*;
use xtask::clap_host::{
    self, HostCheck, HostEvent, Instance, Playback, TimedEvent, TransportState, engine_counter,
};

const RATE: f64 = 48_000.0;
const BLOCK: usize = 480;
/// 2 s: 100 steps.
const SECTION: usize = 96_000;
/// A stopped transport parks here, and the pre-generated run starts here.
const PARKED_AT: u64 = 48_000;

/// Run `instance` for `samples` samples in blocks of [`BLOCK`], with `strength` for slot 1 from
/// the first sample, in the given mode.
fn run(
    instance: &mut Instance,
    samples: usize,
    strength: f64,
    transport: &dyn Fn(u64) -> TransportState,
    offline: bool,
    wait_before: Option<(u64, HostCheck<'_>)>,
) -> Vec<f32> {
    if offline {
        clap_host::set_offline(instance).unwrap();
    } else {
        clap_host::set_realtime(instance).unwrap();
    }
    let param = clap_host::clap_param_id("slot1-strength");
    let value = clap_host::clap_value(instance, "slot1-strength", strength).unwrap();
    let events = [TimedEvent {
        sample: 0,
        event: HostEvent::Param { param, value },
    }];
    let blocks = vec![BLOCK; samples.div_ceil(BLOCK)];
    let played = Playback {
        sample_rate: RATE,
        blocks: &blocks,
        events: &events,
        transport: Some(transport),
        paced: !offline,
        wait_before,
        ..Default::default()
    }
    .run(instance)
    .unwrap();
    played.channels[0][..samples].to_vec()
}

fn from_zero(t: u64) -> TransportState {
    TransportState {
        playing: true,
        position: t,
    }
}

/// A counter of the engine report once the engine has caught up with every control it was
/// sent (the counter holds still for 5 floors' worth of time).
fn counter(instance: &mut Instance, key: &str) -> u64 {
    let mut last = engine_counter(instance, key).unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = engine_counter(instance, key).unwrap();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Every sample is the reference's or silence.
fn aligned_or_silent(out: &[f32], reference: &[f32]) -> bool {
    out.iter()
        .zip(reference)
        .all(|(o, r)| *o == 0.0 || o.to_bits() == r.to_bits())
}

#[test]
fn a_slow_engine_bounces_exactly_underruns_in_real_time_and_replays_from_the_cache() {
    let scratch = temp_dir("slow-engine");
    let dir = scratch.path();
    let slot = format!("1={}:0", head_file(dir, TARGET).display());
    // A cushion of 20 steps (400 ms) lets the first steps of a realtime run arrive in time.
    let cli = [
        "--seconds",
        "1",
        "--seed",
        "3",
        "--slot",
        &slot,
        "--set",
        "cushion=20",
    ];
    let parked = PARKED_AT;
    let stopped_then_playing = move |t: u64| TransportState {
        playing: t >= 10 * BLOCK as u64,
        position: parked + t.saturating_sub(10 * BLOCK as u64),
    };
    let from_parked = move |t: u64| TransportState {
        playing: true,
        position: parked + t,
    };

    // References at full speed.
    let mut fast = configured(&cli);
    let reference_a = run(&mut fast, SECTION, 1.0, &from_zero, true, None);
    let reference_b = run(&mut fast, SECTION, -1.5, &from_zero, true, None);
    let reference_c = run(&mut fast, 48_000, 0.5, &from_parked, true, None);
    for (name, reference) in [
        ("a", &reference_a),
        ("b", &reference_b),
        ("c", &reference_c),
    ] {
        assert!(
            reference.iter().any(|x| x.abs() > 1e-3),
            "reference {name} plays"
        );
    }

    // SAFETY: this test binary's one test; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var("MUSICRFM_SIMULATE_STEP_MS", "40") };
    let mut slow = configured(&cli);

    // Offline: the bounce waits for every step.
    let offline = run(&mut slow, SECTION, 1.0, &from_zero, true, None);
    assert!(
        bits(&offline) == bits(&reference_a),
        "an offline bounce of a slow engine equals the full-speed bounce"
    );

    // A realtime replay of the unchanged section: from the timeline cache, no decoder step.
    let decoded = counter(&mut slow, "decoder_steps");
    let replayed = counter(&mut slow, "replayed_steps");
    let underruns = counter(&mut slow, "underruns");
    let replay = run(&mut slow, SECTION, 1.0, &from_zero, false, None);
    assert_eq!(
        counter(&mut slow, "decoder_steps"),
        decoded,
        "the replay runs no decoder step"
    );
    assert!(
        counter(&mut slow, "replayed_steps") >= replayed + 100,
        "the section's 100 steps come from the cache"
    );
    assert_eq!(
        counter(&mut slow, "underruns"),
        underruns,
        "the replay never underruns"
    );
    assert!(
        bits(&replay) == bits(&reference_a),
        "the realtime replay equals the bounce"
    );

    // New automation in real time: the engine falls behind, underruns are counted, and what
    // plays is in its place.
    let live = run(&mut slow, SECTION, -1.5, &from_zero, false, None);
    assert!(
        counter(&mut slow, "underruns") > underruns,
        "a slow engine underruns in real time"
    );
    assert!(
        counter(&mut slow, "decoder_steps") > decoded,
        "new automation runs decoder steps"
    );
    assert!(
        aligned_or_silent(&live, &reference_b),
        "every sample is the bounce's or silence: underruns never shift the timeline"
    );
    let first = live.iter().position(|x| *x != 0.0);
    assert!(first.is_some(), "the first steps arrive in time and play");
    let first = first.unwrap();
    let gap = (first..SECTION).any(|i| live[i] == 0.0 && reference_b[i].abs() > 1e-3);
    assert!(
        gap,
        "then the slow engine falls behind: a gap where the bounce has sound"
    );

    // Stopped at PARKED_AT: the engine pre-generates from there with the parameters as they
    // are; playing from there in real time replays it at once.
    let ahead = |instance: &mut Instance| {
        engine_counter(instance, "pregenerated_steps").is_ok_and(|steps| steps >= 80)
    };
    let underruns = counter(&mut slow, "underruns");
    let replayed = counter(&mut slow, "replayed_steps");
    let stopped_blocks = 10 * BLOCK;
    let played = run(
        &mut slow,
        stopped_blocks + 48_000,
        0.5,
        &stopped_then_playing,
        false,
        Some((stopped_blocks as u64, &ahead)),
    );
    assert!(
        played[..stopped_blocks].iter().all(|x| *x == 0.0),
        "stopped: silence"
    );
    assert_eq!(
        counter(&mut slow, "underruns"),
        underruns,
        "the pre-generated part never underruns"
    );
    assert!(
        counter(&mut slow, "replayed_steps") >= replayed + 50,
        "the second played comes from the pre-generation"
    );
    assert!(
        bits(&played[stopped_blocks..]) == bits(&reference_c),
        "playing a pre-generated section equals its bounce"
    );
}
