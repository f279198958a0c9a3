//! The built plugin across a session: its state round-trips with eight filled slots and plays
//! the same after a reload; bad inputs give silence and the host lives; a MIDI note steers its
//! class from its step with its velocity; the transport stops, loops and starts anywhere.
//!
//! The plugin file is `$MUSICRFM_CLAP` (`cargo xtask test` sets it to the release bundle), or
//! else the `libmusicrfm.so` beside this test binary's profile directory.

mod support;

use support::*;
use xtask::clap_host::{self, HostEvent, TimedEvent, clap_param_id, clap_value};

#[test]
fn state_round_trips_with_eight_slots_and_plays_the_same_after_reload() {
    let scratch = temp_dir("state");
    let dir = scratch.path();
    let slots: Vec<String> = (0..8)
        .map(|k| format!("{}={}:0", k + 1, head_file(dir, TARGET + 10 * k).display()))
        .collect();
    let strengths: Vec<String> = (0..8)
        .map(|k| format!("slot{}-strength={}", k + 1, 0.25 * (k as f64 + 1.0) - 1.0))
        .collect();
    let mut cli = vec!["--seconds", "0.4", "--seed", "9"];
    for (slot, strength) in slots.iter().zip(&strengths) {
        cli.extend_from_slice(&["--slot", slot, "--set", strength]);
    }
    let mut first = configured(&cli);
    let saved = clap_host::save_state(&mut first).unwrap();
    let json = clap_host::state_json(&saved).unwrap();
    let files: serde_json::Value =
        serde_json::from_str(json["fields"]["slots"].as_str().unwrap()).unwrap();
    assert_eq!(
        files
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["file"] != "")
            .count(),
        8,
        "eight filled slots: {files}"
    );

    let (entry, id) = clap_host::load_entry(&clap_host::test_plugin()).unwrap();
    let mut second = clap_host::instantiate(&entry, &id).unwrap();
    clap_host::load_state(&mut second, &saved).unwrap();
    let saved_again = clap_host::save_state(&mut second).unwrap();
    assert_eq!(saved, saved_again, "save → load → save");

    let (before, _) = play(&mut first, 48_000.0, 24_000, 512, &[], None);
    let (after, _) = play(&mut second, 48_000.0, 24_000, 512, &[], None);
    assert!(before.iter().any(|&x| x.abs() > 1e-3), "not silence");
    assert_eq!(bits(&before), bits(&after), "a bounce after reload");
}

#[test]
fn bad_inputs_give_silence_and_the_host_lives() {
    let scratch = temp_dir("bad");
    let dir = scratch.path();
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a safetensors file").unwrap();
    let good = head_file(dir, TARGET);
    let missing_model = dir.join("no-such-model").display().to_string();
    let corrupt_slot = format!("1={}:0", corrupt.display());
    let no_class = format!("1={}:no-such-class", good.display());
    let cases: [(&str, Vec<&str>); 3] = [
        ("missing model", vec!["--model", &missing_model]),
        ("corrupt directions file", vec!["--slot", &corrupt_slot]),
        ("class not in the file", vec!["--slot", &no_class]),
    ];
    for (what, extra) in cases {
        let mut cli = vec!["--seconds", "0.3"];
        cli.extend_from_slice(&extra);
        let out = bounced(&cli);
        assert!(out.iter().all(|&x| x == 0.0), "{what}: silence");
    }
    // A state saved by a newer musicrfm (a larger state format) is not applied.
    let mut instance = configured(&["--seconds", "0.3"]);
    let mut json = clap_host::state_json(&clap_host::save_state(&mut instance).unwrap()).unwrap();
    clap_host::set_field(&mut json, "format", &serde_json::json!(2));
    clap_host::load_state(&mut instance, &clap_host::state_bytes(&json)).unwrap();
    let (out, _) = play(&mut instance, 48_000.0, 14_400, 512, &[], None);
    assert!(out.iter().all(|&x| x == 0.0), "newer state: silence");
    // The host goes on: the same process bounces a good configuration.
    let out = bounced(&["--seconds", "0.3"]);
    assert!(
        out.iter().any(|&x| x.abs() > 1e-3),
        "a good bounce after the bad ones"
    );
}

#[test]
fn a_midi_note_steers_its_class_from_its_step_with_its_velocity() {
    let scratch = temp_dir("midi");
    let dir = scratch.path();
    let notes = notes_file(dir);
    let rate = 48_000u32;
    let at = (11 * u64::from(rate)).div_ceil(50) - 100; // inside step 10: drives step 11
    let common = [
        "--seconds",
        "0.5",
        "--seed",
        "4",
        "--set",
        "gate=1",
        "--block",
        "256",
    ];

    // Slot 1 in MIDI notes mode, strength 2: E (pitch class 4) at velocity 0.75 → η 1.5.
    let mut midi = configured(&common);
    let mut json = clap_host::state_json(&clap_host::save_state(&mut midi).unwrap()).unwrap();
    let mut slots = vec![serde_json::json!({"file": "", "class": ""}); 8];
    slots[0] = serde_json::json!({"file": notes.display().to_string(), "class": "", "midi": true});
    clap_host::set_field(&mut json, "slots", &serde_json::Value::Array(slots));
    clap_host::set_param(&mut json, "slot1-strength", "2").unwrap();
    clap_host::load_state(&mut midi, &clap_host::state_bytes(&json)).unwrap();
    let note = [TimedEvent {
        sample: at,
        event: HostEvent::NoteOn {
            key: 64,
            velocity: 0.75,
        },
    }];
    let (played, _) = play(&mut midi, f64::from(rate), 24_000, 256, &note, None);

    // The same class as a plain slot whose strength an automation point sets to 1.5 there.
    let class = format!("1={}:E", notes.display());
    let mut cli = common.to_vec();
    cli.extend_from_slice(&["--slot", &class]);
    let mut plain = configured(&cli);
    let value = clap_value(&mut plain, "slot1-strength", 1.5).unwrap();
    let point = [TimedEvent {
        sample: at,
        event: HostEvent::Param {
            param: clap_param_id("slot1-strength"),
            value,
        },
    }];
    let (automated, _) = play(&mut plain, f64::from(rate), 24_000, 256, &point, None);
    let (unsteered, _) = play(
        &mut configured(&cli),
        f64::from(rate),
        24_000,
        256,
        &[],
        None,
    );

    assert_eq!(
        bits(&played),
        bits(&automated),
        "the note is the automation point"
    );
    assert_ne!(bits(&played), bits(&unsteered), "the note steers");
}

#[test]
fn transport_stops_loops_and_starts_anywhere() {
    let rate = 48_000u64;
    let scratch = temp_dir("transport");
    let dir = scratch.path();
    let slot = format!("1={}:0", head_file(dir, TARGET).display());
    let cli = [
        "--seconds",
        "1",
        "--seed",
        "2",
        "--slot",
        &slot,
        "--set",
        "slot1-strength=1",
    ];
    let pass = 19_200u64; // 0.4 s
    let (start, block) = (48_000u64 * 3, 480usize);
    // Play [start, start + pass) twice (a loop), stop for a while, then play from a position
    // inside step 7 (so from step 8 on).
    let jump = (7 * rate).div_ceil(50) + 300;
    let transport = play_stop_play(start, pass, 2 * pass, 4800, start + jump);
    let total = (2 * pass + 4800 + pass) as usize;
    let mut instance = configured(&cli);
    let (out, _) = play(
        &mut instance,
        rate as f64,
        total,
        block,
        &[],
        Some(&transport),
    );
    let pass = pass as usize;
    assert!(
        out[..pass].iter().any(|&x| x.abs() > 1e-3),
        "the first pass plays"
    );
    assert_eq!(
        bits(&out[..pass]),
        bits(&out[pass..2 * pass]),
        "the loop replays"
    );
    assert!(
        out[2 * pass..2 * pass + 4800].iter().all(|&x| x == 0.0),
        "stopped: silence"
    );

    // From the jump: silent until step 8 starts (and then the latency's pre-roll), then the
    // step-8 stream; a start exactly at step 8 gives the same song-aligned audio.
    let resumed = &out[2 * pass + 4800..];
    let step8 = (8 * rate).div_ceil(50) as usize - jump as usize;
    assert!(
        resumed[..step8].iter().all(|&x| x == 0.0),
        "nothing before step 8"
    );
    let aligned = play_stop_play(start, 960, 960, 4800, start + (8 * rate).div_ceil(50));
    let mut other = configured(&cli);
    let (exact, _) = play(
        &mut other,
        rate as f64,
        960 + 4800 + pass,
        block,
        &[],
        Some(&aligned),
    );
    let exact = &exact[960 + 4800..];
    assert!(
        exact.iter().any(|&x| x.abs() > 1e-3),
        "the step-8 stream plays"
    );
    assert_eq!(bits(&resumed[step8..]), bits(&exact[..pass - step8]));
}
