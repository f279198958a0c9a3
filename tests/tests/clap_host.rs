//! The built `musicrfm.clap` in a third-party CLAP host (clack-host): scan, instantiate,
//! activate, process blocks of varying size, automate a parameter, and round-trip the state.
//!
//! The plugin file is `$MUSICRFM_CLAP` (set by `cargo xtask test` to the release bundle), or
//! else the `libmusicrfm.so` that `cargo test --workspace` builds beside this test binary.

use xtask::clap_host::{
    self, HostEvent, Instance, Playback, TimedEvent, find_param, load_state, param_names,
    save_state, set_offline,
};

const SAMPLE_RATE: f64 = 48_000.0;

/// Threads of this process (Linux: the entries of `/proc/self/task`).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Activate, process blocks of varying size with a parameter change in the middle, deactivate.
/// Returns every output sample.
fn run_blocks(instance: &mut Instance, param: clap_host::ClapId, value: f64) -> Vec<f32> {
    let blocks = [64usize, 1, 300, 512, 7, 256, 129];
    let events = [TimedEvent {
        sample: 365,
        event: HostEvent::Param { param, value },
    }];
    let played = Playback {
        sample_rate: SAMPLE_RATE,
        blocks: &blocks,
        events: &events,
        transport: None,
        offline_after_activation: false,
        ..Default::default()
    }
    .run(instance)
    .expect("process");
    played.channels.concat()
}

#[test]
fn clap_scan_process_and_state_round_trip() {
    // A DAW scans hundreds of plugins: the scan (entry, factory, descriptor) must not start
    // the engine, whose model loading runs on threads of its own. This is the only test in
    // this binary, so no other test's threads come and go meanwhile.
    let threads = thread_count();
    let (entry, id) = clap_host::load_entry(&clap_host::test_plugin()).expect("plugin built");
    assert_eq!(id.to_str().unwrap(), "com.musicrfm.musicrfm");
    assert_eq!(
        thread_count(),
        threads,
        "scanning the plugin started a thread"
    );

    let mut first = clap_host::instantiate(&entry, &id).unwrap();
    let default_state = save_state(&mut first).unwrap();
    let names = param_names(&mut first).unwrap();
    assert_eq!(names.len(), 3 * 8 + 13, "parameters: {names:?}");
    for k in 1..=8 {
        for what in ["strength", "shape", "length"] {
            let name = format!("Slot {k} {what}");
            assert!(names.contains(&name), "no parameter {name}: {names:?}");
        }
    }
    for name in [
        "Master",
        "Layers",
        "Layers value",
        "Gate",
        "Guidance",
        "Temperature",
        "Top k",
        "Seed",
        "Clock",
        "Cushion",
        "Context",
        "Weights",
        "Engine report",
    ] {
        assert!(names.iter().any(|n| n == name), "no parameter {name}");
    }
    let (strength, initial) = find_param(&mut first, "Slot 1 strength").unwrap();
    assert_eq!(
        initial, 0.5,
        "slot 1 strength defaults to 0 (normalised 0.5 of -2..2)"
    );

    // Offline render mode is what a bounce uses; the plugin must accept it.
    set_offline(&mut first).expect("offline render mode");

    // CLAP hosts see float parameters normalised to 0..1: 0.8 is strength 1.2.
    let samples = run_blocks(&mut first, strength, 0.8);
    assert_eq!(samples.len(), 2 * (64 + 1 + 300 + 512 + 7 + 256 + 129));
    assert!(
        samples.iter().all(|s| s.is_finite()),
        "every output sample is written and finite"
    );
    let (_, automated) = find_param(&mut first, "Slot 1 strength").unwrap();
    assert!(
        (automated - 0.8).abs() < 1e-6,
        "the parameter event reached the plugin: {automated}"
    );

    let saved = save_state(&mut first).unwrap();
    assert_ne!(
        saved, default_state,
        "the automated value must be part of the state"
    );

    let mut second = clap_host::instantiate(&entry, &id).unwrap();
    load_state(&mut second, &saved).unwrap();
    let (_, restored) = find_param(&mut second, "Slot 1 strength").unwrap();
    assert!(
        (restored - 0.8).abs() < 1e-6,
        "state restores the parameter: {restored}"
    );
    let saved_again = save_state(&mut second).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&saved),
        String::from_utf8_lossy(&saved_again),
        "state survives save → load → save byte for byte"
    );
    assert_eq!(saved, saved_again);

    // The persisted prompt (not a parameter) round-trips as well: a host restoring a project
    // hands back a state whose prompt the user typed in the editor.
    let with_prompt = state_with_prompt(&saved, "dreamy lofi with \"quoted\" words ♪");
    let mut third = clap_host::instantiate(&entry, &id).unwrap();
    load_state(&mut third, &with_prompt).unwrap();
    let restored = save_state(&mut third).unwrap();
    let as_json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(&bytes[8..]).unwrap();
    assert_eq!(as_json(&restored), as_json(&with_prompt));
    let mut fourth = clap_host::instantiate(&entry, &id).unwrap();
    load_state(&mut fourth, &restored).unwrap();
    assert_eq!(save_state(&mut fourth).unwrap(), restored);
}

/// `state` with the persisted prompt replaced.
fn state_with_prompt(state: &[u8], prompt: &str) -> Vec<u8> {
    let mut json = clap_host::state_json(state).unwrap();
    clap_host::set_field(&mut json, "prompt", &serde_json::json!(prompt));
    clap_host::state_bytes(&json)
}
