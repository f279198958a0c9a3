//! `process()` never allocates: a debug build of the plugin with nice-plug's
//! `assert_process_allocs` (which aborts this whole process on an allocation inside
//! `process()`) plays automation, MIDI notes, transport stops, jumps and loops, offline, so its
//! bounded wait for the engine runs too. Its own test binary, since a failure aborts the process.
//!
//! The plugin file is `$MUSICRFM_CLAP_ALLOC_CHECKED` (`cargo xtask test` builds it with
//! `cargo build -p musicrfm --features assert_process_allocs` and sets it).

#[path = "../../engine/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use xtask::clap_host::{self, HostEvent, Playback, TimedEvent, TransportState, clap_param_id};

#[test]
fn process_does_not_allocate_over_automation_midi_transport_and_the_offline_wait() {
    let path = std::env::var_os("MUSICRFM_CLAP_ALLOC_CHECKED")
        .map(PathBuf::from)
        .expect(
            "MUSICRFM_CLAP_ALLOC_CHECKED: a debug build with --features assert_process_allocs \
         (run `cargo xtask test`)",
        );
    let scratch = common::temp_dir("allocs");
    let dir = scratch.path();
    let model =
        engine::MusicGen::load(&common::model_dir("musicgen-tiny"), &common::device()).unwrap();
    let file = common::host::head_direction_file(&model, 1234, &dir.join("head.safetensors"));
    drop(model);

    let (entry, id) = clap_host::load_entry(&path).unwrap();
    let mut instance = clap_host::instantiate(&entry, &id).unwrap();
    let mut state = clap_host::state_json(&clap_host::save_state(&mut instance).unwrap()).unwrap();
    let model_dir = common::model_dir("musicgen-tiny").display().to_string();
    clap_host::set_field(&mut state, "model", &serde_json::json!(model_dir));
    clap_host::set_field(
        &mut state,
        "prompt",
        &serde_json::json!("80s pop with synths"),
    );
    let mut slots = vec![serde_json::json!({"file": "", "class": ""}); 8];
    slots[0] = serde_json::json!({"file": file.display().to_string(), "class": "0"});
    slots[1] = serde_json::json!({"file": file.display().to_string(), "class": "0", "midi": false});
    clap_host::set_field(&mut state, "slots", &serde_json::Value::Array(slots));
    clap_host::load_state(&mut instance, &clap_host::state_bytes(&state)).unwrap();
    clap_host::set_offline(&mut instance).unwrap();

    let rate = 48_000u64;
    let strength = clap_param_id("slot1-strength");
    let mut events = Vec::new();
    for i in 0..200u64 {
        events.push(TimedEvent {
            sample: i * 97,
            event: HostEvent::Param {
                param: strength,
                value: (i % 10) as f64 / 10.0,
            },
        });
        if i % 7 == 0 {
            events.push(TimedEvent {
                sample: i * 97 + 11,
                event: HostEvent::NoteOn {
                    key: (48 + i % 24) as u8,
                    velocity: 0.5,
                },
            });
        }
        if i % 7 == 3 {
            events.push(TimedEvent {
                sample: i * 97 + 5,
                event: HostEvent::NoteOff {
                    key: (48 + (i - 3) % 24) as u8,
                },
            });
        }
    }
    // Play (past the latency, so audio comes), stop, start elsewhere (a seek), loop back.
    let transport = |t: u64| match t {
        0..24_000 => TransportState {
            playing: true,
            position: t,
        },
        24_000..26_400 => TransportState {
            playing: false,
            position: 0,
        },
        26_400..40_800 => TransportState {
            playing: true,
            position: 4_800 + t - 26_400,
        },
        _ => TransportState {
            playing: true,
            position: t - 40_800,
        },
    };
    let blocks: Vec<usize> = (0..280).map(|i| [480, 64, 333, 1][i % 4]).collect();
    let played = Playback {
        sample_rate: rate as f64,
        blocks: &blocks,
        events: &events,
        transport: Some(&transport),
        offline_after_activation: false,
        ..Default::default()
    }
    .run(&mut instance)
    .unwrap();
    assert!(
        played.channels[0].iter().any(|&x| x.abs() > 1e-3),
        "the engine played, so the offline wait ran"
    );
}
