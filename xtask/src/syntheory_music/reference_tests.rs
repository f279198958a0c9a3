//! One clip per concept pinned message by message against brown-palm/syntheory: the expected
//! tracks below are worked out by hand from the reference's Python (file and function named on
//! each), not taken from our output. Status bytes: 0xC_ program change, 0xB_ controller,
//! 0x9_ note-on, 0x8_ note-off; the low nibble is the channel.

use super::clicks::{CLICK_KITS, tempo_us};
use super::*;

/// (tick, status, data1, data2) of every channel message.
fn track(spec: &ClipSpec) -> Vec<(u32, u8, u8, u8)> {
    midi_messages(spec)
        .iter()
        .map(|m| (m.tick, m.status, m.data1, m.data2))
        .collect()
}

fn find(concept: Concept, program: u8, attrs: &[(&str, Value)]) -> ClipSpec {
    concept
        .clips(&[program], 0)
        .into_iter()
        .find(|c| attrs.iter().all(|(k, v)| c.attributes.get(*k) == Some(v)))
        .unwrap_or_else(|| panic!("no {concept:?} clip with {attrs:?}"))
}

/// Tonal clips: `create_midi_track(bpm=120, program, channel=2)`: tempo 500 000 µs, program
/// change on channel 2, no controller; the render is the MIDI length, 8 beats = 4 s.
fn assert_tonal(spec: &ClipSpec, program: u8) {
    assert_eq!(spec.tempo_us, 500_000);
    assert_eq!(
        (spec.channel, spec.program, spec.reverb),
        (2, program, None)
    );
    assert_eq!((spec.render_seconds, spec.crop_start), (4.0, 0.0));
}

#[test]
fn notes_c4_piano() {
    // notes.py::get_note_midi(60): (0, 2), (2, 4), (4, 6), (6, 8) beats; midi.py::write_melody
    // with velocity 64 on and off, 480 ticks per beat.
    let c = find(Concept::Notes, 0, &[("midi_note", json!(60))]);
    assert_tonal(&c, 0);
    assert_eq!(c.label, "C");
    assert_eq!(c.attributes["register"], json!(1)); // bisect((3, 6, 9), octave 5): mid
    #[rustfmt::skip]
    let want = vec![
        (0, 0xC2, 0, 0),
        (0, 0x92, 60, 64), (960, 0x82, 60, 64),
        (960, 0x92, 60, 64), (1920, 0x82, 60, 64),
        (1920, 0x92, 60, 64), (2880, 0x82, 60, 64),
        (2880, 0x92, 60, 64), (3840, 0x82, 60, 64),
    ];
    assert_eq!(track(&c), want);
}

#[test]
fn intervals_fifth_down_and_unison_on_c() {
    // intervals.py::write_interval_midi(60, 7, DOWN): (67, 60) 1 beat each, 4×, write_melody.
    let c = find(
        Concept::Intervals,
        24,
        &[
            ("interval", json!(7)),
            ("play_style", json!("down")),
            ("base_midi_note", json!(60)),
        ],
    );
    assert_tonal(&c, 24);
    #[rustfmt::skip]
    let want = vec![
        (0, 0xC2, 24, 0),
        (0, 0x92, 67, 64), (480, 0x82, 67, 64), (480, 0x92, 60, 64), (960, 0x82, 60, 64),
        (960, 0x92, 67, 64), (1440, 0x82, 67, 64), (1440, 0x92, 60, 64), (1920, 0x82, 60, 64),
        (1920, 0x92, 67, 64), (2400, 0x82, 67, 64), (2400, 0x92, 60, 64), (2880, 0x82, 60, 64),
        (2880, 0x92, 67, 64), (3360, 0x82, 67, 64), (3360, 0x92, 60, 64), (3840, 0x82, 60, 64),
    ];
    assert_eq!(track(&c), want);
    // UNISON: both notes together for 1 beat, 8×, write_progression (ons, then offs in order).
    let c = find(
        Concept::Intervals,
        24,
        &[
            ("interval", json!(7)),
            ("play_style", json!("unison")),
            ("base_midi_note", json!(60)),
        ],
    );
    let t = track(&c);
    assert_eq!(t.len(), 1 + 8 * 4);
    #[rustfmt::skip]
    assert_eq!(t[..7], [
        (0, 0xC2, 24, 0),
        (0, 0x92, 60, 64), (0, 0x92, 67, 64),
        (480, 0x82, 60, 64), (480, 0x82, 67, 64),
        (480, 0x92, 60, 64), (480, 0x92, 67, 64),
    ]);
    assert_eq!(t[32], (3840, 0x82, 67, 64));
}

#[test]
fn scales_d_dorian_down() {
    // scales.py::get_scale_midi("D", "dorian", DOWN): tonic 62 + (0, 2, 3, 5, 7, 9, 10, 12),
    // reversed, 1 beat each.
    let c = find(
        Concept::Scales,
        0,
        &[
            ("mode", json!("dorian")),
            ("root_note_name", json!("D")),
            ("play_style", json!("down")),
        ],
    );
    assert_tonal(&c, 0);
    let keys = [74u8, 72, 71, 69, 67, 65, 64, 62];
    let mut want = vec![(0, 0xC2, 0, 0)];
    for (i, k) in (0u32..).zip(keys) {
        want.extend([(480 * i, 0x92, k, 64), (480 * (i + 1), 0x82, k, 64)]);
    }
    want[1..].sort_by_key(|&(t, s, _, _)| (t, s)); // offs (0x82) before ons (0x92) at a tick
    assert_eq!(track(&c), want);
}

#[test]
fn chords_f_sharp_augmented_first_inversion() {
    // transforms.py::get_augmented_triad(6, "6"): harmonic minor of D# (pc 3), tonic
    // get_tonic_midi_note_value(3) = 63, degree III = 63 + (3, 7, 11) = 66 70 74; "6" moves the
    // root up an octave to the end: 70 74 78. chords.py::get_chord_midi: 4× for 2 beats.
    let c = find(
        Concept::Chords,
        40,
        &[
            ("chord_type", json!("aug")),
            ("root_note_name", json!("F#")),
            ("inversion", json!("6")),
        ],
    );
    assert_tonal(&c, 40);
    assert_eq!(c.attributes["midi_notes"], json!([70, 74, 78]));
    let t = track(&c);
    assert_eq!(t.len(), 1 + 4 * 6);
    #[rustfmt::skip]
    assert_eq!(t[..10], [
        (0, 0xC2, 40, 0),
        (0, 0x92, 70, 64), (0, 0x92, 74, 64), (0, 0x92, 78, 64),
        (960, 0x82, 70, 64), (960, 0x82, 74, 64), (960, 0x82, 78, 64),
        (960, 0x92, 70, 64), (960, 0x92, 74, 64), (960, 0x92, 78, 64),
    ]);
    assert_eq!(t[24], (3840, 0x82, 78, 64));
    // Root position and "64" of G aug (harmonic minor of E, tonic 64): 67 71 75 / 75 79 83.
    assert_eq!(triad(7, "aug", 0), [67, 71, 75]);
    assert_eq!(triad(7, "aug", 2), [75, 79, 83]);
    assert_eq!(triad(8, "aug", 0), [68, 72, 76]);
    assert_eq!(triad(9, "aug", 0), [57, 61, 65]); // harmonic minor of F#, tonic 54
}

#[test]
fn progressions_a_aeolian_1_7_6_4() {
    // chord_progressions.py::get_progression_midi_notes(9, "aeolian", (1, 7, 6, 4)) through
    // transforms.py::get_chord: tonic 57, degrees d, d+2, d+4 of (0, 2, 3, 5, 7, 8, 10) mod 7,
    // no octave added: i = 57 60 64, VII = 67 59 62, VI = 65 57 60, iv = 62 65 57; 2 beats each.
    let c = find(
        Concept::Progressions,
        0,
        &[
            ("chord_progression", json!("aeolian-(1, 7, 6, 4)")),
            ("key_note_name", json!("A")),
        ],
    );
    assert_tonal(&c, 0);
    let chords = [[57u8, 60, 64], [67, 59, 62], [65, 57, 60], [62, 65, 57]];
    let mut want = vec![(0, 0xC2, 0, 0)];
    for (i, ch) in (0u32..).zip(chords) {
        want.extend(ch.map(|k| (960 * i, 0x92, k, 64)));
        want.extend(ch.map(|k| (960 * (i + 1), 0x82, k, 64)));
    }
    want[1..].sort_by_key(|&(t, s, _, _)| (t, s));
    assert_eq!(track(&c), want);
}

#[test]
fn tempos_50_bpm_default_kit() {
    // tempos.py::create_midi_and_synth(bpm=50): create_click_track_midi(num_beats=50 // 3 = 16,
    // 4/4, SHEETSAGE_DRUM_CLICK): tempo bpm2tempo(50) = 1 200 000 µs, program 0 on channel 9,
    // write_click: CC91 = 0, 17 clicks of 480 ticks, downbeat (every 4th) key 37 velocity 100,
    // others key 31 velocity 75; the render is trimmed to 20 s.
    let c = Concept::Tempos
        .clips(&[], 0)
        .into_iter()
        .find(|c| c.attributes["bpm"] == json!(50) && c.attributes["click_kit"] == "default")
        .unwrap();
    assert_eq!((c.tempo_us, c.channel, c.program), (1_200_000, 9, 0));
    assert_eq!((c.reverb, c.render_seconds), (Some(0), 20.0));
    let t = track(&c);
    assert_eq!(t.len(), 2 + 17 * 2);
    #[rustfmt::skip]
    assert_eq!(t[..10], [
        (0, 0xC9, 0, 0), (0, 0xB9, 91, 0),
        (0, 0x99, 37, 100), (480, 0x89, 37, 100),
        (480, 0x99, 31, 75), (960, 0x89, 31, 75),
        (960, 0x99, 31, 75), (1440, 0x89, 31, 75),
        (1440, 0x99, 31, 75), (1920, 0x89, 31, 75),
    ]);
    assert_eq!(t[10], (1920, 0x99, 37, 100));
    assert_eq!(t[35], (8160, 0x89, 37, 100)); // click 16 is a downbeat
    assert!(c.seconds(8160) > 20.0, "the MIDI outlasts the 20 s trim");
    assert_eq!(tempo_us(70), 857_143); // round(60e6 / 70)
}

#[test]
fn time_signatures_6_8_woodblock_light_full_reverb() {
    // time_signatures.py::row_processor((6, 8), reverb level 2, WOODBLOCK_LIGHT): 120 BPM,
    // int(8 / 4 * 60) = 120 beats; write_click: compound, so 240-tick clicks, 121 of them, on
    // channel 2 with program 115, CC91 = 127, downbeat every 6th click key 52 velocity 100,
    // others key 48 velocity 75; the render is trimmed to 30 s.
    let c = Concept::TimeSignatures
        .clips(&[], 0)
        .into_iter()
        .find(|c| {
            c.label == "6/8"
                && c.attributes["click_kit"] == "woodblock_light"
                && c.attributes["reverb_level"] == 127
        })
        .unwrap();
    assert_eq!((c.tempo_us, c.channel, c.program), (500_000, 2, 115));
    assert_eq!((c.reverb, c.render_seconds), (Some(127), 30.0));
    let t = track(&c);
    assert_eq!(t.len(), 2 + 121 * 2);
    #[rustfmt::skip]
    assert_eq!(t[..6], [
        (0, 0xC2, 115, 0), (0, 0xB2, 91, 127),
        (0, 0x92, 52, 100), (240, 0x82, 52, 100),
        (240, 0x92, 48, 75), (480, 0x82, 48, 75),
    ]);
    assert_eq!(t[2 + 2 * 6], (1440, 0x92, 52, 100));
    assert_eq!(t[243], (29_040, 0x82, 52, 100)); // click 120 is a downbeat
    // 2/2: 31 clicks (int(2 / 4 * 60) = 30, + 1) of 960 ticks; 3/8: simple, 121 of 240 ticks.
    let find = |label: &str| {
        Concept::TimeSignatures
            .clips(&[], 0)
            .into_iter()
            .find(|c| c.label == label)
            .unwrap()
    };
    let half = find("2/2");
    assert_eq!((half.notes.len(), half.notes[1].tick), (31, 960));
    let three_eight = find("3/8");
    assert_eq!(
        (three_eight.notes.len(), three_eight.notes[1].tick),
        (121, 240)
    );
}

#[test]
fn click_kits_are_the_metronome_configs() {
    // metronome_configs.py::CLICK_CONFIGS (channel, program, downbeat key, offbeat key).
    let kits: Vec<_> = CLICK_KITS
        .iter()
        .map(|k| (k.name, k.channel, k.program, k.downbeat_key, k.offbeat_key))
        .collect();
    assert_eq!(
        kits,
        [
            ("default", 9, 0, 37, 31),
            ("woodblock_dark", 2, 115, 37, 31),
            ("woodblock_light", 2, 115, 52, 48),
            ("taiko", 2, 116, 52, 48),
            ("synth_drum", 2, 118, 52, 48),
        ]
    );
}
